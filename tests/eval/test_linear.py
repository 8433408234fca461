"""The head module of ``task=linear``/``task=finetune`` and its settings, without a run."""

from __future__ import annotations

import re
import sys

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from nbr_contrast.app.config import BackboneConfig, TaskConfig
from nbr_contrast.app.evaluation.classifier import HeadClassifier, build_mixup
from nbr_contrast.app.evaluation.head_data import FeatureDataset, RankSliceSampler
from nbr_contrast.app.evaluation.head_task import check_task
from nbr_contrast.app.evaluation.layer_decay import decayed_groups, layer_id, num_blocks
from nbr_contrast.app.evaluation.report import SplitFeatures
from nbr_contrast.app.reliability import ConfigError
from nbr_contrast.models.backbones import build_backbone


def task_cfg(**task: object) -> DictConfig:
    """A run config holding only what the head module reads: ``task``."""
    return OmegaConf.create({"task": OmegaConf.structured(TaskConfig(name="linear", **task))})


def separable(n: int, dim: int, classes: int, seed: int) -> SplitFeatures:
    """Points labelled by a fixed linear map, keeping only those with a margin."""
    w = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123))
    x = torch.randn(4 * n, dim, generator=torch.Generator().manual_seed(seed))
    logits = x @ w.T
    top2 = logits.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) > 1.0
    return SplitFeatures(x[keep][:n], logits[keep][:n].argmax(dim=1), torch.arange(n))


def test_head_on_features_learns_a_separable_problem(tmp_path: object) -> None:
    train, test = separable(1024, 32, 5, seed=0), separable(256, 32, 5, seed=1)
    L.seed_everything(0, verbose=False)
    module = HeadClassifier(task_cfg(epochs=10, lr=0.4, batch_size=128), None, 32, 5)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    train_loader = DataLoader(FeatureDataset(train), batch_size=128, shuffle=True)
    test_loader = DataLoader(FeatureDataset(test), batch_size=256)
    before = trainer.validate(module, test_loader, verbose=False)[0]["val/acc1"]
    trainer.fit(module, train_loader)
    scores = trainer.validate(module, test_loader, verbose=False)[0]
    assert before < 0.6 and scores["val/acc1"] >= 0.98 and scores["val/acc5"] == 1.0


def test_frozen_backbone_stays_in_eval_mode_without_gradients() -> None:
    backbone = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.BatchNorm1d(8)
    )
    module = HeadClassifier(task_cfg(), backbone, 8, 3)
    module.train()
    assert module.head.training and not backbone.training
    assert not any(p.requires_grad for p in backbone.parameters())
    batch = {"image": torch.randn(4, 3, 2, 2), "label": torch.tensor([0, 1, 2, 0])}
    module.training_step(batch, 0).backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert module.head.weight.grad is not None
    assert torch.equal(backbone[2].running_mean, torch.zeros(8))  # BN statistics untouched


def test_shards_cover_the_test_set_once_without_padding() -> None:
    shards = [list(RankSliceSampler(11, 2, r)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(11))
    assert [len(RankSliceSampler(11, 2, r)) for r in range(2)] == [6, 5]


@pytest.mark.parametrize(
    ("task", "setting"),
    [
        ({"name": "finetune", "precompute": True}, "task.precompute=true"),
        ({"name": "linear", "mixup": 0.8}, "task.mixup"),
        ({"name": "finetune", "cutmix": 1.0, "batch_size": 7}, "task.batch_size=7"),
        ({"name": "linear", "optimizer": "lamb"}, "task.optimizer='lamb'"),
        ({"name": "finetune", "layer_decay": 0.0}, "task.layer_decay=0.0"),
        ({"name": "linear", "epochs": 0}, "task.epochs=0"),
    ],
)
def test_settings_that_cannot_work_fail_in_one_line(task: dict, setting: str) -> None:
    cfg = OmegaConf.create({"task": OmegaConf.structured(TaskConfig(**task))})
    with pytest.raises(ConfigError, match=re.escape(setting)) as err:
        check_task(cfg)
    assert "\n" not in str(err.value)


def test_mixup_without_timm_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm.data", None)
    with pytest.raises(ConfigError, match=r"task.mixup=0.8 task.cutmix=0.0 need timm"):
        build_mixup(task_cfg(mixup=0.8).task, 10)
    assert build_mixup(task_cfg().task, 10) is None


def test_layer_decay_of_a_torchvision_vit() -> None:
    vit = build_backbone(BackboneConfig(name="vit_tiny", patch_size=4), 16)
    assert num_blocks(vit) == 12
    assert layer_id("conv_proj.weight", 12) == layer_id("encoder.pos_embedding", 12) == 0
    assert layer_id("encoder.layers.encoder_layer_11.mlp.0.weight", 12) == 12
    assert layer_id("encoder.ln.weight", 12) == 13
    groups = decayed_groups(vit.named_parameters(), 12, 0.5, 0.05)
    scales = {g["lr_scale"] for g in groups}
    assert scales == {0.5**k for k in range(14)}
    embedding = [g for g in groups if any(p is vit.conv_proj.weight for p in g["params"])]
    assert embedding[0]["lr_scale"] == 0.5**13 and embedding[0]["weight_decay"] == 0.05
    token = [g for g in groups if any(p is vit.class_token for p in g["params"])]
    assert token[0]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(vit.parameters()))


def test_layer_decay_of_a_timm_vit_and_none_for_a_resnet() -> None:
    timm = pytest.importorskip("timm")
    vit = timm.create_model(
        "vit_tiny_patch16_224", num_classes=0, img_size=16, patch_size=4, depth=2
    )
    assert num_blocks(vit) == 2
    assert layer_id("patch_embed.proj.weight", 2) == layer_id("cls_token", 2) == 0
    assert layer_id("blocks.1.attn.qkv.weight", 2) == 2 and layer_id("norm.weight", 2) == 3
    resnet = build_backbone(BackboneConfig(name="resnet18"), 16)
    assert num_blocks(resnet) == 0
    groups = decayed_groups(resnet.named_parameters(), 0, 0.65, 0.0)
    assert {g["lr_scale"] for g in groups} == {1.0}
