"""Interrupt a run (mid-epoch or at an epoch end), resume it, get the uninterrupted result."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from nbr_contrast.app import api
from nbr_contrast.app.reliability import ConfigError, RunInterrupted, resolve_checkpoint
from nbr_contrast.data.sampling import ResumableSampler

from .conftest import with_callback

RUN = ["trainer.max_epochs=2", "trainer.limit_train_batches=3"]


class SignalAt(L.Callback):
    """Send ``signum`` to this process when training batch ``step`` starts."""

    def __init__(self, step: int, signum: int) -> None:
        self.step = step
        self.signum = signum

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    bank = ckpt["callbacks"]["NeighbourIndexCallback"]["banks"]["support"]
    state = {f"model.{k}": v for k, v in ckpt["state_dict"].items()}
    state.update({f"bank.{k}": v for k, v in bank.items() if isinstance(v, torch.Tensor)})
    state["global_step"] = torch.tensor(ckpt["global_step"])
    return state


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_epoch_then_resume_matches_uninterrupted_run_bitwise(
    run_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    """2 epochs of 3 steps; SIGTERM during step 1 (epoch 0), resume, compare with no stop.

    Bitwise on CPU, with or without loader workers: the sampler order and every item's
    augmentation seed are functions of seed + epoch (+ index), and the main process's RNG
    states are restored just before the next batch is drawn. Weights, EMA buffer, probe and
    the whole bank (embeddings, labels, indices, pointer) must be identical, so the resumed
    run drew the same batches with the same augmentations.
    """
    loader = f"data.num_workers={workers}"
    api.fit(run_cfg(tmp_path / "straight", *RUN, loader))

    run = tmp_path / "stopped"
    with monkeypatch.context() as m:
        with_callback(m, SignalAt(1, signal.SIGTERM))
        with pytest.raises(RunInterrupted) as stop:
            api.fit(run_cfg(run, *RUN, loader))
    assert stop.value.step == 2 and stop.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back
    assert _final_state(run)["global_step"] == 2
    note = (run / "RESUME.md").read_text()
    assert "resume=true" in note and str(run) in note

    summary = api.fit(run_cfg(run, *RUN, loader, "resume=true"))
    assert summary["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    straight, resumed = _final_state(tmp_path / "straight"), _final_state(run)
    assert resumed["global_step"] == 6
    assert straight.keys() == resumed.keys()
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert different == []


class KeepEpochEndCheckpoint(L.Callback):
    """Copy ``last.ckpt`` as written at the end of epoch 0 into ``target``'s checkpoints."""

    def __init__(self, source: Path, target: Path) -> None:
        self.source, self.target = source, target

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.current_epoch == 1:
            (self.target / "checkpoints").mkdir(parents=True)
            shutil.copy(self.source / "checkpoints" / "last.ckpt", self.target / "checkpoints")


def test_resume_from_an_epoch_end_checkpoint_with_loader_workers_is_exact(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint every epoch end writes resumes into the next epoch's order and views.

    With loader workers Lightning creates the training iterator (which draws the sampler's
    order) before the fit-start hooks run, so the saved position must reach the sampler
    when the checkpoint is loaded.
    """
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    with monkeypatch.context() as m:
        with_callback(m, KeepEpochEndCheckpoint(straight, resumed))
        api.fit(run_cfg(straight, *RUN, "data.num_workers=2"))
    api.fit(run_cfg(resumed, *RUN, "data.num_workers=2", "resume=true"))
    a, b = _final_state(straight), _final_state(resumed)
    assert b["global_step"] == 6
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_augmentations_do_not_depend_on_the_number_of_loader_workers(
    run_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    api.fit(run_cfg(tmp_path / "none", *RUN, "data.num_workers=0"))
    api.fit(run_cfg(tmp_path / "two", *RUN, "data.num_workers=2"))
    a, b = _final_state(tmp_path / "none"), _final_state(tmp_path / "two")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_sigint_stops_at_the_batch_boundary_with_a_loadable_checkpoint(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_callback(monkeypatch, SignalAt(0, signal.SIGINT))
    with pytest.raises(RunInterrupted) as stop:
        api.fit(run_cfg(tmp_path / "run", "trainer.limit_train_batches=2"))
    assert stop.value.signum == signal.SIGINT and stop.value.step == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert _final_state(tmp_path / "run")["global_step"] == 1


def test_sampler_order_depends_on_seed_and_epoch_only() -> None:
    data = list(range(40))
    a, b = ResumableSampler(data, 4, seed=3), ResumableSampler(data, 4, seed=3)
    a.set_epoch(0)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    b.set_epoch(1)  # a fresh process that starts at epoch 1
    assert list(b) == second != first
    b.resume_at(1, 3)
    b.set_epoch(1)  # what Lightning calls at the epoch start keeps the position
    assert list(b) == second[12:]
    assert list(b) == second  # the skip applies once
    b.resume_at(0, 2)
    b.set_epoch(1)  # another epoch drops it
    assert list(b) == second


def test_resume_and_ckpt_last_resolve_to_checkpoints(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"resume=true but .* does not exist"):
        resolve_checkpoint(run_cfg(tmp_path / "fresh", "resume=true"))
    with pytest.raises(ConfigError, match="ckpt=last: no run of method nnclr"):
        resolve_checkpoint(run_cfg(tmp_path / "x", "ckpt=last"))
    for name, age in (("old", 100), ("new", 0)):
        last = tmp_path / "outputs" / "nnclr" / name / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True)
        last.write_bytes(b"")
        stamp = last.stat().st_mtime - age
        os.utime(last, (stamp, stamp))
    assert resolve_checkpoint(run_cfg(tmp_path / "x", "ckpt=last")) == str(
        Path("outputs/nnclr/new/checkpoints/last.ckpt")
    )
    with pytest.raises(ConfigError, match="both set"):
        resolve_checkpoint(run_cfg(tmp_path / "x", "ckpt=last", "resume=true"))
