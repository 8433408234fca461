"""Override lists for the tiny CPU runs that tests train (composed as the CLI composes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nbr_contrast.app.overrides import last_wins

__all__ = ["CPU_RUN", "PX16", "SMALL_NNCLR", "TINY", "last_wins", "run_cli", "run_python"]

# The lists below are combined by appending (``[*TINY, "trainer.limit_train_batches=3"]``):
# the CLI refuses a key given twice, so commands built from them go through last_wins.
CPU_RUN = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger.tensorboard=false",
    "data.batch_size=16",
    "data.eval_batch_size=64",
    "data.num_workers=0",
    "optim.warmup_epochs=0",
    "plots=false",
]
# two training batches per epoch
TINY = [*CPU_RUN, "trainer.limit_train_batches=2"]
# 16 px images and views
PX16 = ["data.image_size=16", "data.views=[{size:16},{size:16}]"]
# NNCLR with small heads and a 48-entry support set
SMALL_NNCLR = [
    "method=nnclr",
    "method.proj_hidden_dim=64",
    "method.pred_hidden_dim=64",
    "method.proj_output_dim=32",
    "method.queue_size=48",
    "method.knn_k=5",
]


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, keep_repeats: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python -m nbr_contrast ARGS`` in ``cwd`` (``HYDRA_FULL_ERROR`` unset, ``env`` added).

    A key given more than once keeps its last value, unless ``keep_repeats``.
    """
    full = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "nbr_contrast", *(args if keep_repeats else last_wins(args))],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=120,
    )


def run_python(
    args: list[str], timeout: int = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a fresh interpreter (nothing imported yet), asserted to succeed."""
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_ranks_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m nbr_contrast ARGS`` as a fresh launcher of its own ranks.

    The parent's rank variables (``LOCAL_*``) and the project's ``NBR_CONTRAST_*`` ones are
    left out, so the child starts its own process group; 600 s for multi-process runs.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBR_CONTRAST_", "LOCAL_"))}
    return subprocess.run(
        [sys.executable, "-m", "nbr_contrast", *last_wins(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )
