"""The LightningModule of ``task=linear`` and ``task=finetune``: a backbone and a new head.

* ``linear``: the backbone is frozen: no gradients, kept in eval mode whatever the trainer
  asks (batch-norm statistics stay as pretrained, dropout off); only the linear head trains.
  Without a backbone the module trains on precomputed features (batch key ``"feature"``).
* ``finetune``: backbone and head train together; ViT blocks get layer-wise learning-rate
  decay (:mod:`~nbr_contrast.app.evaluation.layer_decay`), and optional mixup/cutmix come from timm.

Both train with SGD (momentum 0.9) or AdamW at ``task.lr * global batch / 256``, a per-step
linear warm-up over ``task.warmup_epochs`` and a cosine decay to zero. Validation reports
top-1 and top-5 accuracy with torchmetrics, whose states are summed over every rank.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from nbr_contrast.app.evaluation.layer_decay import decayed_groups, num_blocks
from nbr_contrast.app.reliability.validation import ConfigError
from nbr_contrast.utils.schedules import warmup_cosine

MOMENTUM = 0.9
OPTIMISERS = ("sgd", "adamw")
"""Values of ``task.optimizer`` (checked before a run starts)."""


def build_mixup(task: DictConfig, num_classes: int) -> Any:
    """The timm ``Mixup`` of ``task.mixup``/``task.cutmix`` (``None`` when both are 0).

    Raises:
        ConfigError: If either is set and timm is not installed.
    """
    if float(task.mixup) <= 0 and float(task.cutmix) <= 0:
        return None
    try:
        from timm.data import Mixup
    except ImportError as err:
        raise ConfigError(
            f"task.mixup={task.mixup} task.cutmix={task.cutmix} need timm; install it with "
            "pip install 'nbr-contrast[timm]', or set task.mixup=0 task.cutmix=0."
        ) from err
    return Mixup(
        mixup_alpha=float(task.mixup),
        cutmix_alpha=float(task.cutmix),
        label_smoothing=float(task.label_smoothing),
        num_classes=num_classes,
    )


class HeadClassifier(L.LightningModule):
    """A linear head on a frozen (``linear``) or trained (``finetune``) backbone.

    Args:
        cfg: The run config (``cfg.task`` holds the recipe); saved in the checkpoint.
        backbone: The pretrained backbone, or ``None`` to train on precomputed features.
        in_dim: Feature size.
        num_classes: Number of classes.
    """

    def __init__(
        self, cfg: DictConfig, backbone: nn.Module | None, in_dim: int, num_classes: int
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
        self.task = cfg.task
        self.finetune = str(cfg.task.name) == "finetune"
        self.backbone = backbone
        if backbone is not None and not self.finetune:
            backbone.requires_grad_(False)
            backbone.eval()
        self.head = nn.Linear(in_dim, num_classes)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)
        self.top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro")
        self.mixup = build_mixup(cfg.task, num_classes) if self.finetune else None

    def train(self, mode: bool = True) -> HeadClassifier:
        """Set train/eval mode; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.backbone is not None and not self.finetune:
            self.backbone.eval()
        return self

    def features(self, batch: dict[str, Tensor], images: Tensor | None = None) -> Tensor:
        """Backbone features ``[B, F]`` of the batch (``images`` instead of its own)."""
        if self.backbone is None:
            return batch["feature"]
        images = batch["image"] if images is None else images
        if self.finetune:
            return torch.flatten(self.backbone(images), 1)
        with torch.no_grad():
            return torch.flatten(self.backbone(images), 1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy of the head (on mixed images and soft targets with mixup)."""
        labels = batch["label"]
        smoothing = float(self.task.label_smoothing)
        if self.mixup is not None:
            images, targets = self.mixup(batch["image"], labels)
            logits = self.head(self.features(batch, images))
            loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=1), dim=1).mean()
        else:
            logits = self.head(self.features(batch))
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate top-1/top-5 hits; the metrics are computed over all ranks per epoch."""
        logits = self.head(self.features(batch)).float()
        self.top1.update(logits, batch["label"])
        self.top5.update(logits, batch["label"])
        self.log("val/acc1", self.top1, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc5", self.top5, on_step=False, on_epoch=True)

    def global_batch(self) -> int:
        """Images per optimiser step over every rank (with gradient accumulation)."""
        trainer = self.trainer
        return int(self.task.batch_size) * trainer.world_size * trainer.accumulate_grad_batches

    def param_groups(self) -> list[dict[str, Any]]:
        """Head, then (fine-tuning) the backbone with its layer-wise ``lr_scale``."""
        wd = float(self.task.weight_decay)
        groups = decayed_groups(self.head.named_parameters(), 0, 1.0, wd)
        if self.finetune and self.backbone is not None:
            blocks = num_blocks(self.backbone)
            decay = float(self.task.layer_decay)
            groups += decayed_groups(self.backbone.named_parameters(), blocks, decay, wd)
        return groups

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """SGD or AdamW at ``task.lr * global batch / 256``; per-step warm-up and cosine."""
        lr = float(self.task.lr) * self.global_batch() / 256
        groups = self.param_groups()
        for group in groups:
            group["lr"] = lr * group.pop("lr_scale")
        if str(self.task.optimizer) == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=lr)
        else:
            opt = torch.optim.SGD(groups, lr=lr, momentum=MOMENTUM)
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(1, int(self.trainer.max_epochs or 1))
        warmup = round(float(self.task.warmup_epochs) * total / epochs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, total, warmup)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
