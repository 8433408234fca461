"""The base class every method extends: what two methods would otherwise both write.

It holds the backbone, the online linear probe (on detached features, own learning rate,
no weight decay), the online kNN monitor, the optimiser and per-step schedule (learning
rate scaled by the *global* batch), the NaN guard and the read handle on the neighbour
index; :class:`~nbr_contrast.methods.momentum.MomentumMethod` adds momentum encoders. A
steady-state step never reads a device value back to the host: metrics are logged on
logging steps only and the NaN guard is a device-side record checked there (see
:mod:`nbr_contrast.methods.guard`). A method implements :meth:`BaseMethod.step` (its heads
and loss wiring) and, if it uses neighbours, :meth:`BaseMethod.neighbour_specs`.
Labels only monitor (:mod:`~nbr_contrast.monitors.labels`, ``-1``: unknown); without any,
the probe and label logs are off and validation loader 0 is the kNN monitor's bank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from nbr_contrast.methods.guard import (
    FiniteGuard,
    NonFiniteLossError,
    NonFiniteRecord,
    last_good_state,
    save_diagnostic_checkpoint,
)
from nbr_contrast.methods.optimisation import build_optimiser, param_groups, warmup_cosine_scheduler
from nbr_contrast.models.backbones import build_backbone, feature_dim, forward_features
from nbr_contrast.monitors.labels import LABEL_LOGS, knn_monitor_accuracy, probe_cross_entropy
from nbr_contrast.neighbours.bank import NeighbourBank
from nbr_contrast.neighbours.index import BankSpec, DatasetIndexSpec, NeighbourIndex
from nbr_contrast.utils.dist import gather_no_grad
from nbr_contrast.utils.steps import is_logging_step

KNN_MONITOR_KEY = "knn_monitor"
"""Checkpoint key of a stopped epoch's kNN monitor features."""


@dataclass
class StepOutput:
    """What :meth:`BaseMethod.step` returns.

    Attributes:
        loss: The method's loss (the probe's loss is added by the base class).
        features: Backbone features of the first view ``[B, F]`` (probe and kNN monitor).
        logs: Scalars to log under ``train/``.
        enqueue: For each bank name, the entries this step adds: ``{"embeddings": [B, D],
            <payload>: [B, ...]}``. The neighbour-index callback enqueues them (gathered
            across ranks for global banks) after the optimiser step.
    """

    loss: Tensor
    features: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)
    enqueue: dict[str, dict[str, Tensor]] = field(default_factory=dict)


@dataclass
class TrainBatch:
    """One training batch as a method sees it.

    Attributes:
        views: One tensor per configured view ``[B, 3, s, s]``.
        labels: Class labels ``[B]`` (only for monitoring, except in supervised methods).
        indices: True dataset indices ``[B]``.
        neighbour_views: Views of one served neighbour image per sample (CLIM), if any.
        neighbour_indices: Dataset indices of those neighbours.
    """

    views: list[Tensor]
    labels: Tensor
    indices: Tensor
    neighbour_views: list[Tensor] | None = None
    neighbour_indices: Tensor | None = None


class BaseMethod(L.LightningModule):
    """Backbone, probe, kNN monitor, optimiser, NaN guard and neighbour-index handle.

    Args:
        cfg: The whole run config (``method``, ``backbone``, ``data``, ``optim``, ...).
    """

    def __init__(self, cfg: DictConfig | dict[str, Any]) -> None:
        super().__init__()
        cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
        self.save_hyperparameters({"cfg": OmegaConf.to_container(cfg, resolve=True)})
        self.cfg = cfg
        self.num_classes = int(cfg.data.num_classes)
        self.image_size = max(int(v.size) for v in cfg.data.views)
        self.backbone = build_backbone(cfg.backbone, self.image_size)
        self.feature_dim = feature_dim(self.backbone)
        self.probe = nn.Linear(self.feature_dim, self.num_classes)
        self.val_probe_top1 = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.val_probe_top5 = MulticlassAccuracy(
            self.num_classes, top_k=min(5, self.num_classes), average="micro"
        )
        self.finite_guard = FiniteGuard(("loss", "probe_loss"))
        self._diagnosing = False
        self.neighbours: NeighbourIndex | None = None
        self._knn_train: list[tuple[Tensor, Tensor]] = []
        self._knn_val: list[tuple[Tensor, Tensor]] = []
        self._knn_reference: list[tuple[Tensor, Tensor]] = []
        self.labelled = True  # whether training images have labels (set from the data)

    # ---------------------------------------------------------------- method interface
    def step(self, batch: TrainBatch) -> StepOutput:
        """Compute the method's loss for one batch (implemented by each method)."""
        raise NotImplementedError

    def neighbour_specs(self) -> list[BankSpec]:
        """The banks this method needs (none by default)."""
        return []

    def dataset_index_spec(self) -> DatasetIndexSpec | None:
        """The whole-dataset index this method needs (none by default)."""
        return None

    def index_encoder(self) -> nn.Module:
        """Encoder that embeds un-augmented images for the whole-dataset index."""
        return self.backbone

    def before_step(self, log: bool) -> None:
        """Run before each training step's forward (the EMA update of momentum methods).

        Args:
            log: Whether this is a logging step.
        """

    def compile_targets(self) -> list[nn.Module]:
        """Modules compiled by ``trainer.compile=true``: the backbone and the heads."""
        return [
            m for m in self.children() if m is not self.probe and any(True for _ in m.parameters())
        ]

    # ---------------------------------------------------------------- helpers
    def bank(self, name: str) -> NeighbourBank:
        """The bank ``name`` of the neighbour index (built by ``NeighbourIndexCallback``)."""
        if self.neighbours is None:
            raise RuntimeError(
                f"{type(self).__name__} needs the neighbour index but none is attached: add "
                "nbr_contrast.neighbours.callback.NeighbourIndexCallback to the Trainer's "
                "callbacks (nbr_contrast.app.build does this for you)."
            )
        return self.neighbours.bank(name)

    def features(self, images: Tensor) -> Tensor:
        """Backbone features ``[B, F]``."""
        return forward_features(self.backbone, images)

    @staticmethod
    def gather(x: Tensor) -> Tensor:
        """Concatenate ``x`` from all ranks without gradient (a no-op on one process)."""
        return gather_no_grad(x)

    # ---------------------------------------------------------------- training
    def on_train_start(self) -> None:
        """Start the NaN guard afresh; move a resumed epoch's kNN monitor to the device."""
        self.finite_guard.reset()
        self._knn_train = [(f.to(self.device), y.to(self.device)) for f, y in self._knn_train]

    def on_train_epoch_start(self) -> None:
        """Reset the kNN monitor's training features for the new epoch."""
        self._knn_train = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Run the method's step, add the probe loss, guard against NaN, log.

        Metrics are logged on logging steps only (every ``trainer.log_every_n_steps``), so
        other steps never read a device value back to the host.
        """
        log = is_logging_step(self._trainer)
        self.before_step(log)
        nb_views = batch.get("neighbour_views")
        train_batch = TrainBatch(
            views=[self._to_memory_format(v) for v in batch["views"]],
            labels=batch["label"],
            indices=batch["index"],
            neighbour_views=(
                None if nb_views is None else [self._to_memory_format(v) for v in nb_views]
            ),
            neighbour_indices=batch.get("neighbour_index"),
        )
        labels = train_batch.labels
        out = self.step(train_batch)
        feats = out.features.detach()
        probe_loss = probe_cross_entropy(self.probe(feats), labels)
        loss = out.loss + probe_loss
        self.finite_guard.update((out.loss, probe_loss), self.global_step, self.current_epoch)
        if log or self._check_due():
            self._check_finite({"loss": out.loss, "probe_loss": probe_loss, **out.logs})
        logs = {
            f"train/{k}": v for k, v in out.logs.items() if self.labelled or k not in LABEL_LOGS
        }
        logs["train/loss"] = out.loss
        if self.labelled:
            logs["train/probe_loss"] = probe_loss
        self.log_dict(logs, on_step=True, on_epoch=True, prog_bar=False, sync_dist=False)
        if self._trainer is not None and self._trainer.progress_bar_callback is not None:
            self.log("loss", out.loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        if self.labelled:
            self._remember_train_features(feats, labels)
        enqueue = {
            bank: {key: t.detach() for key, t in entries.items()}
            for bank, entries in out.enqueue.items()
        }
        return {"loss": loss, "enqueue": enqueue}

    def _to_memory_format(self, x: Tensor) -> Tensor:
        if self.cfg.trainer.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _check_due(self) -> bool:
        every = int(self.cfg.trainer.get("finite_check_every_n_steps", 0))
        return every > 0 and self.global_step % every == 0

    def _check_finite(self, terms: dict[str, Any]) -> None:
        """Raise :class:`NonFiniteLossError` if a loss so far was NaN/inf (reads the device).

        When the failing step is the current one, a diagnostic checkpoint
        (``checkpoints/nonfinite-step<N>.ckpt``) first saves the state that produced the
        bad loss; ``last.ckpt`` is left as it was.
        """
        found = self.finite_guard.read()
        if found is None:
            return
        step = int(self.trainer.global_step)
        if found.step != step:
            raise self._late_error(found, step)
        values = {
            k: (float(v.detach().float().mean()) if isinstance(v, Tensor) else float(v))
            for k, v in terms.items()
        }
        parts = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        self._diagnosing = True
        try:
            path = save_diagnostic_checkpoint(self.trainer, f"nonfinite-step{step}")
        finally:
            self._diagnosing = False
        raise NonFiniteLossError(
            f"Non-finite loss at global step {step} (epoch {self.current_epoch}): {parts}. "
            f"State at the failing step saved to {path}; {self._last_good()} Lower optim.lr, "
            "check the data, or use trainer.precision=32-true."
        )

    def _last_good(self) -> str:
        """Where the last good state is: ``last.ckpt`` when one was saved before the failure."""
        return last_good_state(Path(str(self.cfg.get("output_dir", "."))))

    def _late_error(self, found: NonFiniteRecord, now: int) -> NonFiniteLossError:
        parts = ", ".join(f"{k}={v:.4g}" for k, v in found.terms.items())
        return NonFiniteLossError(
            f"Non-finite loss at global step {found.step} (epoch {found.epoch}): {parts}; "
            f"found at step {now}, so no diagnostic checkpoint holds the failing state (set "
            f"trainer.finite_check_every_n_steps=1 for one). {self._last_good()} Lower "
            "optim.lr, check the data, or use trainer.precision=32-true."
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to save after a non-finite loss (diagnostic ones excepted); keep the monitor.

        A checkpoint saved mid-epoch (SIGTERM, ``checkpoint_every_n_steps``) also holds the
        kNN monitor's training features of the epoch so far (at most
        ``method.knn_max_train`` rows), so a resumed epoch's ``val/knn_acc`` is the
        uninterrupted one's.
        """
        if self._diagnosing:
            return
        found = self.finite_guard.read()
        if found is not None:
            raise self._late_error(found, int(self.trainer.global_step))
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if self._knn_train and done < self.trainer.num_training_batches:
            checkpoint[KNN_MONITOR_KEY] = (
                torch.cat([f for f, _ in self._knn_train]).cpu(),
                torch.cat([y for _, y in self._knn_train]).cpu(),
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore a stopped epoch's kNN monitor features (a resumed epoch does not restart).

        They move to the model's device in :meth:`on_train_start`. Checkpoints older than
        ``MomentumMethod`` hold ``ema_last_step`` for every method: dropped where unused.
        """
        saved = checkpoint.get(KNN_MONITOR_KEY)
        self._knn_train = [] if saved is None else [saved]
        if not hasattr(self, "ema_last_step"):
            checkpoint.get("state_dict", {}).pop("ema_last_step", None)

    def on_train_end(self) -> None:
        """A run never ends quietly after a non-finite loss."""
        found = self.finite_guard.read()
        if found is not None:
            raise self._late_error(found, int(self.trainer.global_step))

    def _remember_train_features(self, feats: Tensor, labels: Tensor) -> None:
        kept = sum(f.shape[0] for f, _ in self._knn_train)
        room = int(self.cfg.method.knn_max_train) - kept
        if room > 0:
            f = F.normalize(feats[:room].float(), dim=1)
            self._knn_train.append((f, labels[:room]))

    # ---------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        """Start collecting validation (and reference) features."""
        self._knn_val = []
        self._knn_reference = []

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Probe accuracy and features for the kNN monitor (or its bank: loader 0 unlabelled)."""
        images = self._to_memory_format(batch["image"])
        feats = self.features(images)
        if not self.labelled and dataloader_idx == 0:
            self._knn_reference.append((F.normalize(feats.float(), dim=1), batch["label"]))
            return
        self.validate_features(feats, batch["label"])

    def validate_features(self, feats: Tensor, labels: Tensor) -> None:
        """Update the probe metrics (if it trains) and keep the features for the kNN monitor."""
        if self.labelled:
            logits = self.probe(feats)
            self.val_probe_top1.update(logits, labels)
            self.val_probe_top5.update(logits, labels)
        self._knn_val.append((F.normalize(feats.float(), dim=1), labels))

    def log_accuracy(self, name: str, metric: MulticlassAccuracy, prog_bar: bool = False) -> None:
        """Log a torchmetrics accuracy in percent (synced across ranks) and reset it."""
        self.log(name, metric.compute() * 100.0, prog_bar=prog_bar)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        """Probe and kNN accuracy (percent); the kNN bank: training (or reference) features."""
        if self.labelled:
            self.log_accuracy("val/probe_acc1", self.val_probe_top1, prog_bar=True)
            self.log_accuracy("val/probe_acc5", self.val_probe_top5)
        bank = self._knn_train if self.labelled else self._knn_reference
        if not bank or not self._knn_val:
            return
        acc = knn_monitor_accuracy(
            tuple(self.gather(torch.cat(parts)) for parts in zip(*bank, strict=True)),
            tuple(torch.cat(parts) for parts in zip(*self._knn_val, strict=True)),
            int(self.cfg.method.knn_k),
            float(self.cfg.method.knn_temperature),
            self.num_classes,
        )
        if acc is not None:
            self.log("val/knn_acc", acc, prog_bar=True, sync_dist=True)

    # ---------------------------------------------------------------- optimisation
    def global_batch_size(self) -> int:
        """Samples per optimiser step over every device and node (with accumulation)."""
        trainer = self.trainer
        return (
            int(self.cfg.data.batch_size)
            * int(trainer.world_size)
            * int(trainer.accumulate_grad_batches)
        )

    def lr_scale(self) -> float:
        """``global batch / 256`` when ``optim.scale_lr``, else 1 (solo-learn's scale_factor)."""
        return self.global_batch_size() / 256.0 if self.cfg.optim.scale_lr else 1.0

    def learning_rate(self) -> float:
        """Peak learning rate: ``optim.lr × global batch / 256`` when ``optim.scale_lr``."""
        return float(self.cfg.optim.lr) * self.lr_scale()

    def _steps_per_epoch(self, total_steps: int) -> float:
        trainer = self.trainer
        if trainer.max_steps < 0 and trainer.max_epochs:
            return total_steps / trainer.max_epochs
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            return float(total_steps)
        return batches / trainer.accumulate_grad_batches

    def configure_optimizers(self) -> dict[str, Any]:
        """Optimiser (SGD, LARS or AdamW) and the per-step warm-up + cosine schedule."""
        o = self.cfg.optim
        groups = param_groups(self.named_parameters(), self.probe, o, self.lr_scale())
        opt = build_optimiser(groups, o, self.learning_rate())
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = warmup_cosine_scheduler(opt, o, total, self._steps_per_epoch(total))
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }
