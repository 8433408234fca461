"""SIGINT/SIGTERM before a fit's first batch: exit 128 + signal, nothing saved, no folder."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from omegaconf import DictConfig

from nbr_contrast.app import api, tasks
from nbr_contrast.app.reliability import StopOnSignal, StoppedBeforeStep

from .conftest import SMALL, TINY, with_callback


class SignalInSetup(L.Callback):
    """Send ``signum`` to this process while the fit sets up (before any batch)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        os.kill(os.getpid(), self.signum)


def test_a_signal_during_setup_stops_the_fit_at_once(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_callback(monkeypatch, SignalInSetup(signal.SIGTERM))
    with pytest.raises(StoppedBeforeStep) as stop:
        api.fit(run_cfg(tmp_path / "run"))
    assert stop.value.signum == signal.SIGTERM
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back


@pytest.mark.parametrize("where", ["setup", "before the trainer"])
def test_ctrl_c_before_the_first_step_exits_130_and_leaves_no_folder(
    where: str,
    tiny_data: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    main_cli: Callable[[list[str]], tuple[int, str]],
) -> None:
    if where == "setup":
        with_callback(monkeypatch, SignalInSetup(signal.SIGINT))
    else:  # Python's own SIGINT handler: KeyboardInterrupt while the data and model are built
        prepare = tasks.prepare_fit

        def interrupted(cfg: DictConfig) -> Any:
            parts = prepare(cfg)
            os.kill(os.getpid(), signal.SIGINT)
            return parts

        monkeypatch.setattr(tasks, "prepare_fit", interrupted)
    code, err = main_cli([*TINY, *tiny_data, *SMALL, f"hydra.run.dir={tmp_path / 'run'}"])
    assert code == 130, err
    assert "Stopped on SIGINT before anything was saved; the run folder is removed." in err
    assert "Traceback" not in err and "graceful shutdown" not in err
    assert not (tmp_path / "run").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _signal_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_a_forked_loader_worker_leaves_the_signal_to_the_main_process() -> None:
    """Ctrl-C reaches the loader workers too; they must not fail with their own traceback."""
    stop = StopOnSignal()
    stop.setup(None, None, "fit")  # type: ignore[arg-type]
    try:
        worker = multiprocessing.get_context("fork").Process(target=_signal_self)
        worker.start()
        worker.join(30)
    finally:
        stop.teardown(None, None, "fit")  # type: ignore[arg-type]
    assert worker.exitcode == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
