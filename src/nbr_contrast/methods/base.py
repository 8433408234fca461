"""The base class every method extends: what two methods would otherwise both write.

It holds the backbone, the online linear probe (on detached features, own learning rate,
no weight decay), the online kNN monitor, the optimiser and per-step schedule (learning
rate scaled by the *global* batch the Trainer runs), the NaN guard and the read handle on
the neighbour index; :class:`~nbr_contrast.methods.momentum.MomentumMethod` adds momentum
encoders. A steady-state step never reads a device value back to the host: metrics are
logged on logging steps only and the NaN guard is a device-side record checked there (see
:mod:`nbr_contrast.methods.guard`). A method implements
:meth:`~nbr_contrast.methods.base.BaseMethod.step` (its heads and loss wiring) and, if it
uses neighbours, :meth:`~nbr_contrast.methods.base.BaseMethod.neighbour_specs`.

Every method is built from typed keyword arguments whose defaults are its recipe, and
records them with ``save_hyperparameters`` (a backbone passed as a module excepted), so
``NNCLR.load_from_checkpoint(path)`` rebuilds a name-built model. Nothing it takes is a
trainer or data setting: what depends on the run (the global batch, the schedule's length)
it reads from ``self.trainer`` when it needs it.

Size: the one class every method's shared Lightning hooks live in (training step, NaN guard,
kNN monitor, checkpoint hooks, optimiser); split over mixins, the order in which one step's
hooks run would be spread over several classes.

Batches follow the contract of :mod:`nbr_contrast.methods.batch`. Labels only monitor,
except in supervised methods (:mod:`~nbr_contrast.monitors.labels`); without any, the probe
and label logs are off and validation loader 0 is the kNN monitor's bank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from nbr_contrast.methods.batch import (
    StepOutput,
    TrainBatch,
    check_views,
    eval_batch,
    train_batch,
)
from nbr_contrast.methods.checkpoints import METHOD_KEY, check_checkpoint_class, method_record
from nbr_contrast.methods.guard import (
    FiniteGuard,
    NonFiniteLossError,
    NonFiniteRecord,
    last_good_state,
    save_diagnostic_checkpoint,
)
from nbr_contrast.methods.hyperparameters import (
    ArgumentError,
    check_at_least,
    check_hyperparameters,
)
from nbr_contrast.methods.optimisation import (
    OptimConfig,
    as_optim_config,
    build_optimiser,
    param_groups,
    steps_per_epoch,
    warmup_cosine_scheduler,
)
from nbr_contrast.models.backbone_config import BackboneConfig
from nbr_contrast.models.backbones import feature_dim, forward_features, resolve_backbone
from nbr_contrast.monitors.labels import LABEL_LOGS, knn_monitor_accuracy, probe_cross_entropy
from nbr_contrast.monitors.neighbour_quality import neighbour_quality, spread
from nbr_contrast.neighbours.bank import NeighbourBank, SearchResult
from nbr_contrast.neighbours.index import BankSpec, DatasetGraphSpec, NeighbourIndex
from nbr_contrast.utils.batches import per_device_batch_size
from nbr_contrast.utils.dist import gather_no_grad
from nbr_contrast.utils.steps import is_logging_step

KNN_MONITOR_KEY = "knn_monitor"
"""Checkpoint key of a stopped epoch's kNN monitor features."""


class BaseMethod(L.LightningModule):
    """Backbone, probe, kNN monitor, optimiser, NaN guard and neighbour-index handle.

    Args:
        backbone: The network: a module mapping images ``[B, 3, H, W]`` to features
            ``[B, F]`` (a torchvision ResNet with ``fc = nn.Identity()``, a timm model with
            ``num_classes=0``, your own), a torchvision name (``"resnet18"``, built for
            32 px images with the small-image stem), or a
            :class:`~nbr_contrast.models.backbone_config.BackboneConfig`.
        num_classes: Classes of the labels: the online linear probe and the kNN monitor
            classify into them (``None``: neither runs).
        optim: The optimiser and schedule: an
            :class:`~nbr_contrast.methods.optimisation.OptimConfig`, or a mapping of the
            fields that differ from the method's recipe (:attr:`optim_recipe`).
        knn_k: Neighbours of the online kNN monitor.
        knn_temperature: Temperature of the online kNN monitor.
        knn_max_train: Most training features the kNN monitor keeps per epoch.
        channels_last: Run the model, and every batch it gets, in channels-last memory
            format (faster convolutions on GPUs and AVX-512/AMX CPUs).
        finite_check_every_n_steps: Read the non-finite loss record every N steps (0: on
            logging steps only; 1 saves a diagnostic checkpoint of the failing step).
        collapse_warning: Warn once when the embeddings' spread (``train/nbr/spread``, 1 for
            embeddings spread over the sphere, 0 for one point) falls below this on a
            logging step (0: never). Ours, 0.05: CO2 at the smoke scale with τ_con 0.05
            collapsed to a spread of 0.03-0.04 for good, while at τ_con 0.1 the spread dipped
            to 0.098 in the first warm-up steps and recovered (docs/results.md).

    Raises:
        ValueError: For an argument out of its range (named with the fix).
    """

    optim_recipe: ClassVar[OptimConfig] = OptimConfig()
    """The optimiser and schedule of the method's recipe (``conf/optim/<recipe>.yaml``)."""
    view_recipe: ClassVar[str] = "byol"
    """The name of the method's view recipe (``conf/views/<name>.yaml``)."""
    views_needed: ClassVar[int] = 2
    """How many views a training batch must hold."""

    def __init__(
        self,
        *,
        backbone: nn.Module | str | BackboneConfig = "resnet18",
        num_classes: int | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
        knn_k: int = 200,
        knn_temperature: float = 0.1,
        knn_max_train: int = 50000,
        channels_last: bool = False,
        finite_check_every_n_steps: int = 0,
        collapse_warning: float = 0.05,
    ) -> None:
        super().__init__()
        self.backbone, spec = resolve_backbone(backbone)
        self.save_hyperparameters(ignore=["backbone"] if spec is None else [])
        self.optim_config = as_optim_config(optim, self.optim_recipe)
        self.hparams["optim"] = asdict(self.optim_config)
        if spec is not None:
            self.hparams["backbone"] = asdict(spec)
        self.backbone_config = spec
        check_hyperparameters(
            type(self).__name__,
            num_classes=num_classes,
            knn_k=knn_k,
            knn_temperature=knn_temperature,
            knn_max_train=knn_max_train,
            finite_check_every_n_steps=finite_check_every_n_steps,
        )
        check_at_least(
            type(self).__name__,
            "knn_max_train",
            knn_max_train,
            int(knn_k),
            "the kNN monitor's knn_k neighbours come from these rows",
        )
        if not 0 <= collapse_warning < 1:
            raise ArgumentError(
                type(self).__name__, "collapse_warning", collapse_warning, "must be in [0, 1)"
            )
        self.collapse_warning = float(collapse_warning)
        self.collapse_warned = False
        self.logging_step = True
        self.num_classes = None if num_classes is None else int(num_classes)
        self.knn_k = int(knn_k)
        self.knn_temperature = float(knn_temperature)
        self.knn_max_train = int(knn_max_train)
        self.channels_last = bool(channels_last)
        self.finite_check_every_n_steps = int(finite_check_every_n_steps)
        self.feature_dim = feature_dim(self.backbone)
        self.probe: nn.Linear | None = None
        if self.num_classes is not None:
            self.probe = nn.Linear(self.feature_dim, self.num_classes)
            self.val_probe_top1 = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
            self.val_probe_top5 = MulticlassAccuracy(
                self.num_classes, top_k=min(5, self.num_classes), average="micro"
            )
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.finite_guard = FiniteGuard(("loss", "probe_loss"))
        self._diagnosing = False
        self._input_checked = False
        self.neighbours: NeighbourIndex | None = None
        self._knn_train: list[tuple[Tensor, Tensor]] = []
        self._knn_val: list[tuple[Tensor, Tensor]] = []
        self._knn_reference: list[tuple[Tensor, Tensor]] = []
        self.labelled = self.num_classes is not None

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Lightning's ``load_from_checkpoint``, refusing a checkpoint of another method.

        A backbone passed as a module is not in the checkpoint's hyper-parameters: pass it
        again (``backbone=...``); a name-built one is rebuilt.

        Raises:
            ValueError: When another class (or a release before 0.2) wrote the checkpoint.
        """
        check_checkpoint_class(cls, checkpoint_path)
        return super().load_from_checkpoint(
            checkpoint_path, map_location, hparams_file, strict, **kwargs
        )

    # ---------------------------------------------------------------- method interface
    def step(self, batch: TrainBatch) -> StepOutput:
        """Compute the method's loss for one batch (implemented by each method)."""
        raise NotImplementedError

    def neighbour_specs(self) -> list[BankSpec]:
        """The banks this method needs (none by default)."""
        return []

    def dataset_graph_spec(self) -> DatasetGraphSpec | None:
        """The whole-dataset graph this method needs (none by default)."""
        return None

    def graph_encoder(self) -> nn.Module:
        """Encoder that embeds un-augmented images for the whole-dataset graph."""
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
                "nbr_contrast.NeighbourIndexCallback() to the Trainer's callbacks."
            )
        return self.neighbours.bank(name)

    def features(self, images: Tensor) -> Tensor:
        """Backbone features ``[B, F]``."""
        return forward_features(self.backbone, images)

    @staticmethod
    def gather(x: Tensor) -> Tensor:
        """Concatenate ``x`` from all ranks without gradient (a no-op on one process)."""
        return gather_no_grad(x)

    # ---------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        """Read from the datamodule whether the training images have labels."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        has_labels = bool(getattr(datamodule, "labelled", True))
        self.labelled = self.num_classes is not None and has_labels

    def on_fit_start(self) -> None:
        """Say in one line when the probe and the kNN monitor are off."""
        if self.num_classes is None:
            rank_zero_info(
                f"{type(self).__name__}: num_classes is not set, so the online linear probe "
                "and the kNN monitor are off."
            )

    # ---------------------------------------------------------------- training
    def on_train_start(self) -> None:
        """Start the NaN guard afresh; move a resumed epoch's kNN monitor to the device."""
        self.finite_guard.reset()
        self._knn_train = [(f.to(self.device), y.to(self.device)) for f, y in self._knn_train]

    def on_train_epoch_start(self) -> None:
        """Reset the kNN monitor's training features for the new epoch."""
        self._knn_train = []

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        """Run the method's step, add the probe loss, guard against NaN, log.

        Metrics are logged on logging steps only (every ``trainer.log_every_n_steps``), so
        other steps never read a device value back to the host.
        """
        log = is_logging_step(self._trainer)
        self.logging_step = log
        self.before_step(log)
        train = train_batch(batch, type(self).__name__)
        if not self._input_checked:
            check_views(self, train.views, self.backbone_config)
            self._input_checked = True
        train.views = [self._to_memory_format(v) for v in train.views]
        if train.neighbour_views is not None:
            train.neighbour_views = [self._to_memory_format(v) for v in train.neighbour_views]
        labels = train.labels
        out = self.step(train)
        feats = out.features.detach()
        probe_loss = (
            probe_cross_entropy(self.probe(feats), labels)
            if self.probe is not None
            else out.loss.new_zeros(())
        )
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
        if log and "nbr/spread" in out.logs:
            self._watch_collapse(out.logs["nbr/spread"])
        if self._trainer is not None and self._trainer.progress_bar_callback is not None:
            self.log("loss", out.loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)
        if self.labelled:
            self._remember_train_features(feats, labels)
        enqueue = {
            bank: {key: t.detach() for key, t in entries.items()}
            for bank, entries in out.enqueue.items()
        }
        return {"loss": loss, "enqueue": enqueue}

    def neighbour_logs(
        self,
        labels: Tensor,
        sample_ids: Tensor,
        embeddings: Tensor,
        found: SearchResult | None = None,
        positive_sims: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """This step's neighbour diagnostics under ``nbr/`` (logging steps only, else ``{}``).

        Args:
            labels: The queries' labels ``[B]``.
            sample_ids: The queries' sample ids ``[B]``.
            embeddings: The normalised embeddings whose spread is watched ``[B, D]``.
            found: The step's search result (``None``: a baseline without neighbours, which
                reports the spread and the positive pair only).
            positive_sims: The positive pairs' cosine similarities ``[B]``.

        Returns:
            The diagnostics of :mod:`~nbr_contrast.monitors.neighbour_quality`.
        """
        if not self.logging_step:
            return {}
        logs: dict[str, Tensor] = {"spread": spread(embeddings)}
        if found is not None:
            logs |= neighbour_quality(
                labels,
                sample_ids,
                found.payloads["label"],
                found.payloads["sample_id"],
                found.written_at,
                self.global_step,
                found.sims[:, 0],
                positive_sims,
            )
        elif positive_sims is not None:
            logs["positive_sim"] = positive_sims.detach().float().mean()
        return {f"nbr/{k}": v for k, v in logs.items()}

    def _watch_collapse(self, value: Tensor) -> None:
        """Warn once when the embeddings collapse (read on a logging step)."""
        level = float(value)
        if self.collapse_warned or level >= self.collapse_warning:
            return
        self.collapse_warned = True
        rank_zero_warn(
            f"{type(self).__name__} step {self.global_step}: the embeddings have collapsed "
            f"towards one point (train/nbr/spread {level:.3g} < {self.collapse_warning}; 1 is "
            "spread over the sphere). Likely causes: a temperature too low for the data (CO2's "
            "consistency_temperature), a learning rate too high or a warm-up too short, a "
            "momentum encoder still near its random init, or a bank of stale entries. The "
            "loss may still fall; lower the learning rate or raise the temperature."
        )

    def _to_memory_format(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _check_due(self) -> bool:
        every = self.finite_check_every_n_steps
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
        return last_good_state(self.trainer)

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

        The checkpoint names the method's class and the package version
        (:data:`~nbr_contrast.methods.checkpoints.METHOD_KEY`). A checkpoint saved mid-epoch
        (SIGTERM, ``checkpoint_every_n_steps``) also holds the kNN monitor's training features
        of the epoch so far (at most ``knn_max_train`` rows), so a resumed epoch's
        ``val/knn_acc`` is the uninterrupted one's.
        """
        checkpoint[METHOD_KEY] = method_record(type(self))
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
        room = self.knn_max_train - kept
        if room > 0:
            f = F.normalize(feats[:room].float(), dim=1)
            self._knn_train.append((f, labels[:room]))

    # ---------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        """Start collecting validation (and reference) features."""
        self._knn_val = []
        self._knn_reference = []

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Probe accuracy and features for the kNN monitor (or its bank: loader 0 unlabelled)."""
        images, labels = eval_batch(batch)
        feats = self.features(self._to_memory_format(images))
        if not self.labelled and dataloader_idx == 0:
            self._knn_reference.append((F.normalize(feats.float(), dim=1), labels))
            return
        self.validate_features(feats, labels)

    def validate_features(self, feats: Tensor, labels: Tensor) -> None:
        """Update the probe metrics (if it trains) and keep the features for the kNN monitor."""
        if self.labelled and self.probe is not None:
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
        if self.labelled and self.probe is not None:
            self.log_accuracy("val/probe_acc1", self.val_probe_top1, prog_bar=True)
            self.log_accuracy("val/probe_acc5", self.val_probe_top5)
        bank = self._knn_train if self.labelled else self._knn_reference
        if not bank or not self._knn_val or self.num_classes is None:
            return
        acc = knn_monitor_accuracy(
            tuple(self.gather(torch.cat(parts)) for parts in zip(*bank, strict=True)),
            tuple(torch.cat(parts) for parts in zip(*self._knn_val, strict=True)),
            self.knn_k,
            self.knn_temperature,
            self.num_classes,
        )
        if acc is not None:
            self.log("val/knn_acc", acc, prog_bar=True, sync_dist=True)

    # ---------------------------------------------------------------- optimisation
    def global_batch_size(self) -> int:
        """Samples per optimiser step over every device and node, with accumulation.

        The per-device batch is read from the Trainer's training loader.
        """
        trainer = self.trainer
        return (
            per_device_batch_size(trainer)
            * int(trainer.world_size)
            * int(trainer.accumulate_grad_batches)
        )

    def lr_scale(self) -> float:
        """``global batch / 256`` when ``optim.scale_lr``, else 1 (solo-learn's scale_factor)."""
        return self.global_batch_size() / 256.0 if self.optim_config.scale_lr else 1.0

    def learning_rate(self) -> float:
        """Peak learning rate: ``optim.lr × global batch / 256`` when ``optim.scale_lr``."""
        return float(self.optim_config.lr) * self.lr_scale()

    def configure_optimizers(self) -> dict[str, Any]:
        """Optimiser (SGD, LARS or AdamW) and the per-step warm-up + cosine schedule."""
        o = self.optim_config
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scale = self.lr_scale()
        groups = param_groups(self.named_parameters(), self.probe, o, scale)
        opt = build_optimiser(groups, o, float(o.lr) * scale)
        scheduler = warmup_cosine_scheduler(opt, o, total, steps_per_epoch(self.trainer, total))
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }
