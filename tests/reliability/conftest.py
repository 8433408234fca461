"""Tiny runs for the reliability tests on the 100-image npz of ``tests/conftest.py``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from omegaconf import DictConfig

from nbr_contrast import api
from nbr_contrast.app import cli, tasks

from ..runs import CPU_RUN, PX16, SMALL_NNCLR, last_wins

SMALL = SMALL_NNCLR
TINY = [*CPU_RUN, *PX16]


@pytest.fixture
def run_cfg(tiny_data: list[str]) -> Callable[..., DictConfig]:
    """Compose a tiny NNCLR run on the tiny npz, writing into ``output_dir``."""

    def make(output_dir: Path, *overrides: str) -> DictConfig:
        return api.compose([*TINY, *tiny_data, *SMALL, *overrides], output_dir=output_dir)

    return make


@pytest.fixture
def main_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[list[str]], tuple[int, str]]:
    """Run ``python -m nbr_contrast ARGV`` in this process, in ``tmp_path``, without
    ``HYDRA_FULL_ERROR``; return its exit code and standard error."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def run(argv: list[str]) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["nbr_contrast", *last_wins(argv)])
        with pytest.raises(SystemExit) as exit_:
            cli.main()
        return int(exit_.value.code), capsys.readouterr().err

    return run


def error_lines(err: str) -> list[str]:
    """The ``Error:`` lines of a run's standard error."""
    return [line for line in err.splitlines() if line.startswith("Error: ")]


def with_callback(monkeypatch: pytest.MonkeyPatch, callback: L.Callback) -> None:
    """Add ``callback`` to the trainer every task of this test builds."""
    build = tasks.build_trainer

    def build_with(cfg: DictConfig, **overrides: Any) -> L.Trainer:
        trainer = build(cfg, **overrides)
        trainer.callbacks.append(callback)
        return trainer

    monkeypatch.setattr(tasks, "build_trainer", build_with)
