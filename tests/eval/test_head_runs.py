"""``task=linear`` and ``task=finetune`` runs: 2 ranks vs 1, SIGTERM and resume, fine-tuning.

One tiny NNCLR checkpoint (16 px, one step) is the pretrained backbone of every run.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from nbr_contrast import api
from nbr_contrast.app.evaluation import head_task
from nbr_contrast.app.reliability import ConfigError, RunInterrupted

from ..runs import CPU_RUN, PX16, SMALL_NNCLR, run_ranks_cli

HEAD = [
    "trainer.accelerator=cpu",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger.tensorboard=false",
    "data.num_workers=0",
    "task.epochs=2",
]


def pretrain(folder: Path, data: list[str], *overrides: str) -> str:
    """A one-step fit of a tiny NNCLR; its ``last.ckpt``."""
    run = [*CPU_RUN, *PX16, *SMALL_NNCLR, *data, "trainer.limit_train_batches=1"]
    cfg = api.compose([*run, "knn_report=false", *overrides], output_dir=folder)
    return str(api.fit(cfg)["checkpoint"])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, tiny_data: list[str]) -> str:
    """The tiny ResNet-18 checkpoint (100 training and 50 test images)."""
    return pretrain(tmp_path_factory.mktemp("pretrained"), tiny_data)


def head_state(run: Path) -> dict[str, Any]:
    """Head weights, optimiser state and step of a run's ``last.ckpt``."""
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("head.")}
    momentum = ckpt["optimizer_states"][0]["state"]
    state.update({f"momentum.{k}": v["momentum_buffer"] for k, v in momentum.items()})
    return {**state, "global_step": torch.tensor(ckpt["global_step"])}


def test_two_gloo_ranks_match_one_process_with_the_doubled_batch(
    pretrained: str, tmp_path: Path
) -> None:
    """Same images per step (sharded seeded order, per-item augmentation seeds), same lr.

    Rank r of 2 with batch 8 draws positions r, r+2, ... of the 16 that one process draws
    with batch 16, each with the same crop and flip; DDP averages the two gradients to the
    one-process gradient, and the test images are split without padding, so the synced
    accuracy is the one-process accuracy.
    """
    one = api.evaluate(pretrained, "linear", [*HEAD, "task.batch_size=16"], tmp_path / "one")
    two = tmp_path / "two"
    command = ["task=linear", f"ckpt={pretrained}", "trainer=ddp_cpu", "trainer.devices=2"]
    command += [*HEAD, "task.batch_size=8", f"hydra.run.dir={two}"]
    proc = run_ranks_cli(command, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((two / "linear.json").read_text())
    assert result["global_batch"] == one["global_batch"] == 16
    assert result["steps"] == one["steps"] == 12  # 2 epochs of 96 of the 100 images
    assert result["top1"] == pytest.approx(one["top1"], abs=1e-6)
    assert result["top5"] == pytest.approx(one["top5"], abs=1e-6)
    a, b = head_state(tmp_path / "one"), head_state(two)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=key)


def backbone_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone's tensors in a checkpoint (pretraining's or a head run's)."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


class SignalAt(L.Callback):
    """Send SIGTERM to this process when training batch ``step`` starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_then_resume_matches_an_uninterrupted_linear_run(
    pretrained: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped mid-epoch 0, resumed with resume=true: the same head, bit for bit.

    The uninterrupted run leaves the frozen backbone (weights and BatchNorm statistics) as
    pretrained; a resume with another recipe (``task.*``) is refused before any work.
    """
    run = [*HEAD, "task.batch_size=16", "trainer.limit_train_batches=3"]
    straight = api.evaluate(pretrained, "linear", run, tmp_path / "straight")
    assert straight["mode"] == "augmented" and 0 <= straight["top1"] <= straight["top5"] <= 100
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["top1"] == straight["top1"]
    before, after = backbone_weights(pretrained), backbone_weights(straight["checkpoint"])
    assert before.keys() == after.keys()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []  # BN stats too
    stopped = tmp_path / "stopped"
    build = head_task.build_trainer

    def build_with(cfg: DictConfig, **overrides: Any) -> L.Trainer:
        trainer = build(cfg, **overrides)
        trainer.callbacks.append(SignalAt(1))
        return trainer

    with monkeypatch.context() as m:
        m.setattr(head_task, "build_trainer", build_with)
        with pytest.raises(RunInterrupted) as stop:
            api.evaluate(pretrained, "linear", run, stopped)
    assert stop.value.step == 2
    assert "resume=true" in (stopped / "RESUME.md").read_text()
    with pytest.raises(ConfigError, match=r"task\.lr=0\.2 \(was 0\.1\)"):
        api.evaluate(pretrained, "linear", [*run, "task.lr=0.2", "resume=true"], stopped)
    resumed = api.evaluate(pretrained, "linear", [*run, "resume=true"], stopped)
    assert resumed["resumed_from"] == str(stopped / "checkpoints" / "last.ckpt")
    assert (resumed["top1"], resumed["top5"]) == (straight["top1"], straight["top5"])
    a, b = head_state(tmp_path / "straight"), head_state(stopped)
    assert a.keys() == b.keys() and int(b["global_step"]) == 6
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_precomputed_features_mode(pretrained: str, tmp_path: Path) -> None:
    run = [*HEAD, "task.batch_size=16", "task.precompute=true"]
    result = api.evaluate(pretrained, "linear", run, tmp_path)
    assert result["mode"] == "precomputed" and result["steps"] == 12
    assert json.loads((tmp_path / "linear.json").read_text())["top5"] == result["top5"]


def test_finetune_a_resnet_with_mixup_trains_the_backbone(pretrained: str, tmp_path: Path) -> None:
    pytest.importorskip("timm")
    run = [*HEAD, "task.epochs=1", "task.batch_size=16", "task.mixup=0.8", "task.cutmix=1.0"]
    result = api.evaluate(pretrained, "finetune", [*run, "trainer.limit_train_batches=2"], tmp_path)
    assert result["task"] == "finetune" and result["steps"] == 2
    before, after = backbone_weights(pretrained), backbone_weights(result["checkpoint"])
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "finetune.json").is_file()


def test_finetune_a_vit_with_layer_decay(tiny_data: list[str], tmp_path: Path) -> None:
    vit = ["backbone=vit_tiny", "backbone.patch_size=4", "trainer.precision=32-true"]
    ckpt = pretrain(tmp_path / "pretrained", tiny_data, *vit)
    run = [*HEAD, "task.epochs=1", "task.batch_size=16", "task.layer_decay=0.5"]
    run += ["task.warmup_epochs=0", "trainer.limit_train_batches=2"]
    result = api.evaluate(ckpt, "finetune", run, tmp_path / "finetune")
    assert result["steps"] == 2
    state = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)
    rates = {
        round(g["initial_lr"] / (5e-4 * 16 / 256), 8)
        for g in state["optimizer_states"][0]["param_groups"]
    }
    assert rates == {round(0.5**k, 8) for k in range(14)}  # head 1, ..., embedding 0.5^13
