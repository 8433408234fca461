"""Crashes while saving, NaN losses: the last good checkpoint always survives."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from nbr_contrast.app import cli
from nbr_contrast.app.build import build_datamodule, build_method, build_trainer
from nbr_contrast.app.reliability import AtomicCheckpointIO, checkpoint_io
from nbr_contrast.methods.batch import StepOutput
from nbr_contrast.methods.nnclr import NNCLR

from ..runs import last_wins
from .conftest import SMALL, TINY


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_atomic_write_keeps_the_old_file_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io_ = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io_.save_checkpoint({"step": torch.tensor(1)}, target)
    real_save = torch.save

    def half_then_fail(obj: Any, f: Any) -> None:
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        io_.save_checkpoint({"step": torch.tensor(2)}, target)
    monkeypatch.undo()
    assert _load(target)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_crash_while_saving_mid_run_leaves_the_previous_last_ckpt(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step checkpoint every step; the write of step 2's ``last.ckpt`` dies half-way."""
    cfg = run_cfg(
        tmp_path / "run", "trainer.checkpoint_every_n_steps=1", "trainer.limit_train_batches=3"
    )
    real_save = torch.save

    def dies_at_step_2(obj: Any, f: Any) -> None:
        if "last.ckpt" in str(getattr(f, "name", "")) and obj.get("global_step") == 2:
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[:1000])
            raise OSError("killed while writing")
        real_save(obj, f)

    monkeypatch.setattr(checkpoint_io.torch, "save", dies_at_step_2)
    L.seed_everything(0)
    trainer = build_trainer(cfg)
    with pytest.raises(OSError, match="killed while writing"):
        trainer.fit(build_method(cfg), datamodule=build_datamodule(cfg))
    monkeypatch.undo()
    folder = tmp_path / "run" / "checkpoints"
    assert _load(folder / "last.ckpt")["global_step"] == 1
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp"]


def _fit_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    run: Path,
    overrides: list[str],
) -> tuple[object, str]:
    """Run ``python -m nbr_contrast`` (tiny NNCLR) into ``run``; its exit code and stderr."""
    monkeypatch.chdir(run.parent)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv = ["nbr_contrast", *last_wins([*TINY, *SMALL, *overrides]), f"hydra.run.dir={run}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code, capsys.readouterr().err


def test_nan_loss_stops_with_one_line_and_a_diagnostic_checkpoint(
    tiny_data: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_step = NNCLR.step

    def nan_at_step_2(self: NNCLR, batch: Any) -> StepOutput:
        out = real_step(self, batch)
        if self.trainer.global_step == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(NNCLR, "step", nan_at_step_2)
    run = tmp_path / "run"
    extra = ["trainer.checkpoint_every_n_steps=1", "trainer.limit_train_batches=3"]
    code, err = _fit_cli(monkeypatch, capsys, run, [*tiny_data, *extra])
    assert code == 1
    assert "Error: Non-finite loss at global step 2 (epoch 0): loss=nan" in err
    assert "Traceback" not in err
    diagnostic = run / "checkpoints" / "nonfinite-step2.ckpt"
    assert str(diagnostic) in err
    assert f"{run / 'checkpoints' / 'last.ckpt'} still holds the last good state" in err
    assert _load(diagnostic)["global_step"] == 2
    last = _load(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 2
    weights = [v for v in last["state_dict"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)


def test_nan_found_later_stops_before_any_checkpoint_holds_it(
    tiny_data: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Checked on logging steps only: the NaN of step 1 is found at step 3 and named."""
    real_step = NNCLR.step

    def nan_at_step_1(self: NNCLR, batch: Any) -> StepOutput:
        out = real_step(self, batch)
        if self.trainer.global_step == 1:
            out.loss = out.loss * float("inf")
        return out

    monkeypatch.setattr(NNCLR, "step", nan_at_step_1)
    run = tmp_path / "run"
    extra = ["trainer.limit_train_batches=6", "trainer.log_every_n_steps=4"]
    code, err = _fit_cli(monkeypatch, capsys, run, [*tiny_data, *extra])
    assert code == 1
    assert "Error: Non-finite loss at global step 1 (epoch 0): loss=inf" in err
    assert "found at step 3" in err
    assert "Traceback" not in err
    folder = run / "checkpoints"
    assert not folder.exists() or not list(folder.glob("*.ckpt"))


def test_nan_is_never_saved_even_between_checks(
    tiny_data: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A checkpoint due before the next check reads the record first and refuses."""
    real_step = NNCLR.step

    def nan_at_step_1(self: NNCLR, batch: Any) -> StepOutput:
        out = real_step(self, batch)
        if self.trainer.global_step == 1:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(NNCLR, "step", nan_at_step_1)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = [*TINY, *tiny_data, *SMALL, "trainer.limit_train_batches=6"]
    args += ["trainer.log_every_n_steps=50", "trainer.checkpoint_every_n_steps=1"]
    monkeypatch.setattr(sys, "argv", ["nbr_contrast", *last_wins(args), f"hydra.run.dir={run}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "Error: Non-finite loss at global step 1 (epoch 0): loss=nan" in err
    last = _load(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 1
    weights = [v for v in last["state_dict"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)


def test_nan_message_says_when_no_good_checkpoint_exists(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = tiny_cfg(*SMALL)
    method = build_method(cfg)
    method._trainer = SimpleNamespace(
        checkpoint_callback=None, default_root_dir=str(cfg.output_dir)
    )
    assert "no checkpoint was saved before the failure" in method._last_good()
    last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert method._last_good() == f"{last} still holds the last good state."
