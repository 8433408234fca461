"""``last.ckpt`` and the epoch checkpoint hold a run's final state, whatever the step cadence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from nbr_contrast import api


def saved_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.parametrize(
    ("every", "epochs", "steps"),
    [
        (3, 1, 3),  # the cadence divides the run's steps
        (2, 1, 3),  # it does not: step 2 is saved by the cadence, step 3 only at the end
        (5, 1, 3),  # the cadence is longer than the run
    ],
)
def test_last_and_epoch_checkpoints_hold_the_final_step(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, every: int, epochs: int, steps: int
) -> None:
    cfg = run_cfg(
        tmp_path / "run",
        f"trainer.checkpoint_every_n_steps={every}",
        "trainer.limit_train_batches=3",
        f"trainer.max_epochs={epochs}",
        "knn_report=false",
    )
    summary = api.fit(cfg)
    folder = tmp_path / "run" / "checkpoints"
    assert Path(summary["checkpoint"]) == folder / "last.ckpt"
    assert saved_step(folder / "last.ckpt") == steps
    assert saved_step(folder / f"epoch{epochs - 1:03d}.ckpt") == steps
    assert sorted(p.name for p in folder.iterdir()) == [f"epoch{epochs - 1:03d}.ckpt", "last.ckpt"]
