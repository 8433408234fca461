"""Shared helpers for method tests: tiny fits on the built-in data."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from nbr_contrast.app.build import build_datamodule, build_method, build_trainer
from nbr_contrast.methods.base import BaseMethod
from nbr_contrast.methods.batch import TrainBatch


def fit_small(cfg: DictConfig) -> tuple[BaseMethod, L.Trainer]:
    """Fit ``cfg`` and return the trained method and its trainer."""
    L.seed_everything(int(cfg.seed))
    datamodule = build_datamodule(cfg)
    method = build_method(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(method, datamodule=datamodule)
    return method, trainer


def first_batch(cfg: DictConfig) -> dict[str, Any]:
    """The first training batch of ``cfg``'s datamodule."""
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def grads_of(module: torch.nn.Module) -> list[torch.Tensor]:
    """Gradients of every parameter of ``module`` that has one."""
    return [p.grad for p in module.parameters() if p.grad is not None]


def as_train_batch(batch: dict[str, Any]) -> TrainBatch:
    """The typed batch a method's ``step`` receives."""
    return TrainBatch(views=batch["views"], labels=batch["label"], sample_ids=batch["sample_id"])
