"""Resume keeps the metrics history: CSV rows and TensorBoard events from before the stop."""

from __future__ import annotations

import csv
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from nbr_contrast import api
from nbr_contrast.app.reliability import RunInterrupted

from .conftest import with_callback
from .test_resume import RUN, SignalAt

TB = "logger.tensorboard=true"


def _steps(run: Path) -> list[tuple[str, ...]]:
    """The rows of ``metrics.csv`` without timings (``*_ms``)."""
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        tuple(f"{k}={v}" for k, v in sorted(row.items()) if v and not k.endswith("_ms"))
        for row in rows
    ]


def _tb_steps(run: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_resume_after_sigterm_keeps_csv_rows_and_tensorboard_events(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 epochs of 3 steps, SIGTERM during step 4, resume: the history of a run never stopped.

    Step rows, the interrupted epoch's averages and the TensorBoard steps all match.
    """
    api.fit(run_cfg(tmp_path / "straight", *RUN, TB))
    run = tmp_path / "stopped"
    with monkeypatch.context() as m:
        with_callback(m, SignalAt(4, signal.SIGTERM))
        with pytest.raises(RunInterrupted):
            api.fit(run_cfg(run, *RUN, TB))
    before = _steps(run)
    assert any("step=4" in row and "train/loss_step" in str(row) for row in before)
    api.fit(run_cfg(run, *RUN, TB, "resume=true"))
    assert _steps(run)[: len(before)] == before
    assert _steps(run) == _steps(tmp_path / "straight")
    tag = "train/loss_step"
    assert _tb_steps(run, tag) == _tb_steps(tmp_path / "straight", tag) == list(range(6))
