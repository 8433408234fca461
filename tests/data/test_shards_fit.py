"""WebDataset shards through the data module and real fits: views, monitoring and resume."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from nbr_contrast import api
from nbr_contrast.app.build import datamodule_of
from nbr_contrast.app.reliability import ConfigError, RunInterrupted
from nbr_contrast.data.datamodule import ViewsDataModule

from ..reliability.conftest import with_callback
from ..reliability.test_resume import SignalAt, _final_state
from ..runs import PX16, SMALL_NNCLR, TINY
from .shard_files import write_shards

SHARDS = [*PX16, *SMALL_NNCLR, "data=webdataset", "data.batch_size=4", "data.num_classes=3"]


def _cfg(out: Path, pattern: str, *overrides: str) -> DictConfig:
    return api.compose([*TINY, *SHARDS, f"data.shards='{pattern}'", *overrides], output_dir=out)


def _batches(dm: ViewsDataModule) -> list[dict[str, torch.Tensor]]:
    return [
        {"sample_id": b["sample_id"], "views": torch.stack(b["views"])}
        for b in dm.train_dataloader()
    ]


def test_a_resumed_loader_continues_with_the_same_batches_and_views(tmp_path: Path) -> None:
    """Resume is exact: the epoch restarts after the batches already drawn, same views."""
    pattern = write_shards(tmp_path / "shards", [6, 6, 6, 6])
    data = _cfg(tmp_path / "run", pattern, "data.num_workers=2", "data.pipeline=cpu").data
    straight = datamodule_of(data)
    epochs = []
    for epoch in (0, 1):
        straight.train_sampler = None
        loader = straight.train_dataloader()
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        epochs.append(
            [{"sample_id": b["sample_id"], "views": torch.stack(b["views"])} for b in loader]
        )
    assert [len(e) for e in epochs] == [6, 6]
    seen = torch.cat([b["sample_id"] for b in epochs[0]]).tolist()
    assert sorted(seen) == list(range(24))
    assert seen != torch.cat([b["sample_id"] for b in epochs[1]]).tolist()
    for epoch, skipped in ((0, 3), (1, 1)):
        resumed = datamodule_of(data)
        resumed.resume_at(epoch, skipped)
        rest = _batches(resumed)
        assert len(rest) == 6 - skipped
        for a, b in zip(epochs[epoch][skipped:], rest, strict=True):
            assert torch.equal(a["sample_id"], b["sample_id"]) and torch.equal(
                a["views"], b["views"]
            )


def test_the_gpu_pipeline_gets_uint8_crops_per_view(tmp_path: Path) -> None:
    pattern = write_shards(tmp_path / "shards", [4, 4])
    dm = datamodule_of(_cfg(tmp_path / "run", pattern, "data.pipeline=gpu").data)
    batch = next(iter(dm.train_dataloader()))
    crops = batch["crops"]
    assert len(crops) == len(dm.views) and "image" not in batch
    assert all(c.dtype == torch.uint8 and c.shape == (4, 3, 16, 16) for c in crops)
    assert set(batch["label"].tolist()) <= {0, 1, 2}


def test_unlabelled_shards_train_nnclr_with_monitoring_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pattern = write_shards(tmp_path / "shards", [8, 8], labelled=False)
    summary = api.fit(_cfg(tmp_path / "run", pattern))
    assert "the probe, kNN monitor, neighbour agreement and kNN report are off" in caplog.text
    assert summary["steps"] == 2 and summary["knn_acc_after@5"] is None


def test_labelled_shards_are_monitored_on_val_shards(tmp_path: Path) -> None:
    pattern = write_shards(tmp_path / "shards", [8, 8])
    val = write_shards(tmp_path / "val", [6])
    summary = api.fit(_cfg(tmp_path / "run", pattern, f"data.val_shards='{val}'"))
    assert 0.0 <= summary["knn_acc_after@5"] <= 100.0
    assert summary["online_knn_acc"] is not None


def test_sigterm_mid_epoch_then_resume_matches_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for other data (``tests/reliability/test_resume.py``): bitwise."""
    pattern = write_shards(tmp_path / "shards", [6, 6, 6, 6])
    run = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "knn_report=false"]
    api.fit(_cfg(tmp_path / "straight", pattern, *run))
    with monkeypatch.context() as m:
        with_callback(m, SignalAt(1, signal.SIGTERM))
        with pytest.raises(RunInterrupted):
            api.fit(_cfg(tmp_path / "stopped", pattern, *run))
    workers = _cfg(tmp_path / "stopped", pattern, *run, "resume=true", "data.num_workers=2")
    with pytest.raises(ConfigError, match=r"data\.num_workers=2 \(was 0\)"):
        api.fit(workers)  # the workers share the shards: another count, another order
    api.fit(_cfg(tmp_path / "stopped", pattern, *run, "resume=true"))
    straight, resumed = _final_state(tmp_path / "straight"), _final_state(tmp_path / "stopped")
    assert resumed["global_step"] == 6
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []
