"""A Hydra multirun of DDP jobs from the real command line: one complete folder per job.

Two jobs (``optim.lr=0.1,0.2``), each a 2-process gloo DDP run on CPU that Lightning
starts by re-running the command line for rank 1. Every rank of a job must write into
that job's folder (not a sweep or a folder of its own), and both jobs must finish with a
summary, a last checkpoint and their own overrides.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from ..runs import CPU_RUN, PX16, SMALL_NNCLR, run_ranks_cli

RUN = ["trainer=ddp_cpu", "trainer.devices=2", *CPU_RUN, *PX16, *SMALL_NNCLR]


def test_multirun_of_ddp_jobs_writes_one_complete_folder_per_job(
    tiny_data: list[str], tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    proc = run_ranks_cli(
        ["-m", "optim.lr=0.1,0.2", *tiny_data, *RUN, f"hydra.sweep.dir={sweep}"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_nnclr", "1_nnclr"]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
    for job, lr in zip(jobs, ("0.1", "0.2"), strict=True):
        folder = sweep / job
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        assert (folder / "train_ddp_process_1.log").is_file()  # rank 1 ran in this folder
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["config"]["optim"]["lr"] == float(lr)
        assert summary["checkpoint"] == str(folder / "checkpoints" / "last.ckpt")
        # both ranks took part in the sharded kNN passes before and after training
        assert 0.0 <= summary["knn_acc_before@5"] <= 100.0
        assert 0.0 <= summary["knn_acc_after@5"] <= 100.0
        overrides = OmegaConf.load(folder / ".hydra" / "overrides.yaml")
        assert f"optim.lr={lr}" in list(overrides)
