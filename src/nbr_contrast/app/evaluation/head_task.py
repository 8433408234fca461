"""``task=linear`` and ``task=finetune``: train a new head on a pretrained backbone.

Both run on the pretraining engine: the Trainer of :func:`~nbr_contrast.app.build.build_trainer`
(so ``trainer=...`` chooses devices, strategy and precision, and the loggers, progress bar,
atomic checkpoints, SIGTERM handling and exact resume of pretraining apply), with the
module of :mod:`~nbr_contrast.app.evaluation.classifier` and the loaders of
:mod:`~nbr_contrast.app.evaluation.head_data`. ``resume=true`` (with the same ``ckpt``) continues
the run in ``hydra.run.dir`` from its own ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from nbr_contrast.app.build import build_callbacks, build_trainer, checkpoint_dir, datamodule_of
from nbr_contrast.app.evaluation.classifier import OPTIMISERS, HeadClassifier
from nbr_contrast.app.evaluation.head_data import HeadDataModule
from nbr_contrast.app.evaluation.layer_decay import num_blocks
from nbr_contrast.app.evaluation.report import SplitFeatures
from nbr_contrast.app.reliability import (
    ConfigError,
    check_resumable,
    resolve_checkpoint,
    resume_command,
    write_resume_note,
)
from nbr_contrast.app.reliability.checkpoint_io import read_run_config
from nbr_contrast.app.reliability.resume import trajectory_changes
from nbr_contrast.data.datamodule import ViewsDataModule
from nbr_contrast.data.image_source import DataSourceError
from nbr_contrast.methods.base import BaseMethod
from nbr_contrast.models.backbones import feature_dim
from nbr_contrast.monitors.features import extract_features
from nbr_contrast.neighbours.callback import NeighbourIndexCallback

HEAD_KEYS = ("task", "ckpt")
"""Settings a resumed head run shares with its checkpoint, besides pretraining's."""


def check_task(cfg: DictConfig) -> None:
    """Fail before any work on ``task.*`` settings that cannot work, naming the fix.

    Raises:
        ConfigError: One line naming the setting and the fix.
    """
    task, name = cfg.task, str(cfg.task.name)
    if int(task.epochs) < 1 or int(task.batch_size) < 1:
        raise ConfigError(
            f"task.epochs={task.epochs} and task.batch_size={task.batch_size} must be at "
            "least 1; set both to positive numbers."
        )
    if str(task.optimizer) not in OPTIMISERS:
        raise ConfigError(
            f"task.optimizer={task.optimizer!r} is unknown; valid: {', '.join(OPTIMISERS)}."
        )
    if task.precompute and name != "linear":
        raise ConfigError(
            f"task.precompute=true trains a head on fixed features, which task={name} "
            "cannot (it trains the backbone); use task=linear or task.precompute=false."
        )
    mixing = float(task.mixup) > 0 or float(task.cutmix) > 0
    if mixing and name != "finetune":
        raise ConfigError(
            f"task.mixup/task.cutmix apply to task=finetune, not task={name}; set "
            "task.mixup=0 task.cutmix=0."
        )
    if mixing and int(task.batch_size) % 2:
        raise ConfigError(
            f"task.mixup/task.cutmix mix pairs of images, so task.batch_size={task.batch_size} "
            "must be even; set an even task.batch_size."
        )
    if not 0 < float(task.layer_decay) <= 1:
        raise ConfigError(f"task.layer_decay={task.layer_decay} must be in (0, 1]; 1 turns it off.")


def check_head_resumable(cfg: DictConfig, ckpt: str) -> None:
    """Like :func:`~nbr_contrast.app.reliability.check_resumable`, with ``task.*`` and ``ckpt``.

    Raises:
        ConfigError: Naming the settings that differ from the checkpoint's run.
    """
    check_resumable(cfg, ckpt)
    saved = read_run_config(ckpt, "resume=true: checkpoint")
    now: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    changes = trajectory_changes(saved, now, HEAD_KEYS)
    if changes:
        raise ConfigError(
            f"resume=true with settings that change the run's trajectory: {', '.join(changes)}; "
            "resume with the run's own settings (its RESUME.md has the command)."
        )


def labelled_data(cfg: DictConfig) -> ViewsDataModule:
    """The run's datamodule, set up, checked to have labelled training and test images.

    Raises:
        DataSourceError: If training images lack labels or there are no test images.
    """
    data = datamodule_of(cfg.data, int(cfg.seed))
    data.setup("fit")
    if data.num_unlabelled or data.test_source is None:
        raise DataSourceError(
            f"task={cfg.task.name} trains on training labels but {data.num_unlabelled} "
            f"training image(s) of data={cfg.data.name} have none; evaluate on labelled data "
            "(e.g. data.split=train for STL-10), or use task=knn with data.eval_root."
        )
    return data


def precomputed(
    backbone: torch.nn.Module, data: ViewsDataModule, device: torch.device, progress: bool
) -> tuple[SplitFeatures, SplitFeatures]:
    """Features of the un-augmented training and test images (``task.precompute``)."""
    backbone = backbone.to(device)
    assert data.test_source is not None
    train = extract_features(backbone, data.index_dataloader(), device, progress=progress)
    test = extract_features(
        backbone, data.eval_loader(data.test_source), device, False, None, progress
    )
    return SplitFeatures(*train), SplitFeatures(*test)


def head_trainer(cfg: DictConfig) -> L.Trainer:
    """Pretraining's Trainer for ``task.epochs`` epochs, without the neighbour index.

    Lightning does not re-shard the loaders: :class:`HeadDataModule` shards them itself.
    """
    callbacks = [c for c in build_callbacks(cfg) if not isinstance(c, NeighbourIndexCallback)]
    return build_trainer(
        cfg,
        callbacks=callbacks,
        max_epochs=int(cfg.task.epochs),
        max_steps=-1,
        use_distributed_sampler=False,
    )


def train_head(cfg: DictConfig, method: BaseMethod) -> dict[str, Any] | None:
    """Train ``cfg.task``'s head on the backbone of ``method``; report top-1/top-5.

    Args:
        cfg: The run config (``cfg.ckpt``: the pretrained checkpoint, resolved).
        method: The method loaded from ``cfg.ckpt``.

    Returns:
        On rank 0, ``{"task", "top1", "top5", "epochs", "steps", "mode", ...}`` with the
        accuracies in percent; ``None`` on the other ranks.

    Raises:
        ConfigError: For settings that cannot work or do not match the resumed run.
        DataSourceError: Without labelled training and test images.
        RunInterrupted: When SIGTERM or SIGINT stopped the run (after saving ``last.ckpt``).
    """
    check_task(cfg)
    resume = resolve_checkpoint(cfg) if cfg.resume else None
    if resume is not None:
        check_head_resumable(cfg, resume)
    L.seed_everything(int(cfg.seed), workers=True)
    data = labelled_data(cfg)
    backbone = method.backbone
    blocks = num_blocks(backbone)
    if str(cfg.task.name) == "finetune" and float(cfg.task.layer_decay) < 1 and not blocks:
        rank_zero_info(
            f"task.layer_decay={cfg.task.layer_decay} applies to ViT blocks; "
            f"backbone={cfg.backbone.name} has none, so every layer trains at the same rate."
        )
    trainer = head_trainer(cfg)
    features = None
    if cfg.task.precompute:
        progress = bool(cfg.trainer.enable_progress_bar) and trainer.is_global_zero
        features = precomputed(backbone, data, trainer.strategy.root_device, progress)
    module = HeadClassifier(
        cfg, None if features else backbone, feature_dim(backbone), data.num_classes
    )
    loaders = HeadDataModule(data, int(cfg.task.batch_size), features)
    if trainer.is_global_zero:
        write_resume_note(cfg)
    start = time.time()
    trainer.fit(module, datamodule=loaders, ckpt_path=resume)
    elapsed = time.time() - start
    scores = trainer.validate(module, datamodule=loaders, verbose=False)[0]
    if not trainer.is_global_zero:
        return None
    return {
        "task": str(cfg.task.name),
        "ckpt": str(cfg.ckpt),
        "data": str(cfg.data.name),
        "image_size": int(cfg.data.image_size),
        "top1": 100.0 * float(scores["val/acc1"]),
        "top5": 100.0 * float(scores["val/acc5"]),
        "mode": "precomputed" if features else "augmented",
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "global_batch": module.global_batch(),
        "train_seconds": round(elapsed, 1),
        "checkpoint": str(checkpoint_dir(cfg) / "last.ckpt"),
        "resumed_from": resume,
        "resume": resume_command(cfg),
        "logs": str(Path(cfg.output_dir)),
    }
