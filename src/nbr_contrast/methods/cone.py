"""CoNe: contrast your neighbours, for supervised image classification.

Zheng, Wang, You, Qian, Zhang, Wang, Xu. "CoNe: Contrast Your Neighbours for Supervised
Image Classification", arXiv 2308.10761.

Student: backbone ``f`` → projection ``g`` (Linear(F, max(2F, 4096)) → BN → ReLU →
Linear(256)) → classifier ``fc`` on the 256-d projection; the reported accuracy is the
student's logits. Teacher: EMA copy of the whole student (m 0.996 → 1, cosine per step,
updated before the forward) fed the *same* augmented view. A global bank holds teacher
embeddings ``norm(g_t(f_t(x)))``, labels and teacher probabilities ``softmax(fc_t(...))``::

    L_sup = Σ_{p_i > 1e-8} -log p_i / B,   p_i = Σ_{j ∈ top-k(S_i)} softmax(S/τ_sup)_ij [y_j = y_i]
    t_i   = Σ_j softmax_j(k_i·Q/τ_dc) P_j,  L_dc = Σ_i KL(t_i ‖ softmax(logits_i)) / B
    L     = CE + sup_weight·L_sup + dc_weight·L_dc          (0.7 / 0.4, released script)

Epoch 0 is cross-entropy only while the bank fills. ``sup_weight=0 dc_weight=0`` (also
``method=supervised``) is the cross-entropy baseline with the same network and recipe.

Logged besides the loss terms: ``acc1`` and ``teacher_acc1`` (training accuracy of the
student and of the teacher, whose bank entries the neighbour terms use), ``kept`` (the
share of samples the confidence mask keeps) and ``z_norm`` (mean projection norm).

Deviations and options:
    * The probability bank starts uniform (``1/C``); the official code uses random normal
      values, which is harmful on small data.
    * ``confidence_mask`` (default on, as the official code): from epoch 1, CE and L_dc
      are computed only on samples whose smallest student class probability exceeds
      1e-8, still divided by ``B``.
    * ``queue_size: null`` sizes the bank to the samples one epoch trains (the design
      reference's rule for small data); set it to use the paper's 65,536.
    * ``exclude_self`` (default on): both neighbour terms ignore bank entries of the
      sample's own sample id. A bank the size of an epoch always holds the sample's
      own teacher entry from the previous epoch, which would give ``L_sup`` a guaranteed
      same-class neighbour and ``L_dc`` the sample's own stale prediction; at ImageNet
      scale (the paper's setting, 65,536 of 1.28M) that almost never happens.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from nbr_contrast.losses import cone_dc_loss, cone_neighbour_loss
from nbr_contrast.methods.batch import StepOutput, TrainBatch, eval_batch
from nbr_contrast.methods.hyperparameters import (
    ArgumentError,
    check_at_least,
    check_hyperparameters,
    with_fixed,
)
from nbr_contrast.methods.momentum import MomentumMethod
from nbr_contrast.methods.optimisation import OptimConfig
from nbr_contrast.models.heads import MLPHead
from nbr_contrast.neighbours.bank import PayloadSpec
from nbr_contrast.neighbours.index import BankSpec
from nbr_contrast.utils.batches import per_device_batch_size

CONFIDENCE_FLOOR = 1e-8
CONE_OPTIM = OptimConfig(
    name="sgd",
    lr=0.1,
    weight_decay=1e-4,
    exclude_bias_and_norm=False,
    warmup_epochs=5,
    min_lr_ratio=0.001,
    cosine_interval="epoch",
)
"""CoNe's recipe (official ``cone_train.py``; ``conf/optim/cone.yaml``)."""


class Student(nn.Module):
    """Backbone → projection → classifier; returns (features, embedding, logits)."""

    def __init__(
        self, backbone: nn.Module, feature_dim: int, hidden: int, out: int, classes: int
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = MLPHead(feature_dim, [hidden], out)
        self.classifier = nn.Linear(out, classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Features ``[B, F]``, projection ``[B, 256]`` and logits ``[B, C]``."""
        feats = torch.flatten(self.backbone(x), 1)
        z = self.projector(feats)
        return feats, z, self.classifier(z)


class CoNe(MomentumMethod):
    """CoNe (and the CE baseline with both weights 0) as a LightningModule.

    Defaults: the official code and released script (``conf/method/cone.yaml``).

    Args:
        num_classes: Classes of the labels (required: CoNe trains a classifier).
        proj_hidden_dim: Projection hidden width (``None``: ``max(2F, 4096)``).
        proj_output_dim: Projection size (256).
        k: Neighbours per sample in ``L_sup`` (512).
        sup_temperature: ``τ_sup`` (0.1).
        dc_temperature: ``τ_dc`` (0.07).
        sup_weight: Weight of ``L_sup`` (0.7).
        dc_weight: Weight of ``L_dc`` (0.4).
        queue_size: Bank size (``None``: the samples one epoch trains, over every rank).
        confidence_mask: Official confidence mask on CE and ``L_dc``.
        exclude_self: Ignore bank entries of the sample's own id.
        ce_only_epochs: Leading epochs trained with CE only (1).
        momentum: Base teacher momentum (0.996).
        final_momentum: Teacher momentum at the end of training (1.0).
        **kwargs: :class:`~nbr_contrast.methods.momentum.MomentumMethod`'s and
            :class:`~nbr_contrast.methods.base.BaseMethod`'s arguments.
    """

    optim_recipe: ClassVar[OptimConfig] = CONE_OPTIM
    view_recipe: ClassVar[str] = "supervised"
    views_needed: ClassVar[int] = 1

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        proj_hidden_dim: int | None = None,
        proj_output_dim: int = 256,
        k: int = 512,
        sup_temperature: float = 0.1,
        dc_temperature: float = 0.07,
        sup_weight: float = 0.7,
        dc_weight: float = 0.4,
        queue_size: int | None = None,
        confidence_mask: bool = True,
        exclude_self: bool = True,
        ce_only_epochs: int = 1,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        if num_classes is None:
            raise ArgumentError(
                name,
                "num_classes",
                None,
                "must be the number of classes (CoNe trains a classifier)",
            )
        super().__init__(
            num_classes=num_classes, momentum=momentum, final_momentum=final_momentum, **kwargs
        )
        check_hyperparameters(
            name,
            proj_hidden_dim=proj_hidden_dim,
            proj_output_dim=proj_output_dim,
            sup_temperature=sup_temperature,
            dc_temperature=dc_temperature,
            sup_weight=sup_weight,
            dc_weight=dc_weight,
            queue_size=queue_size,
            ce_only_epochs=ce_only_epochs,
        )
        check_at_least(name, "k", k, 1, "L_sup needs neighbours")
        classes = int(num_classes)
        self.k = int(k)
        self.sup_temperature = float(sup_temperature)
        self.dc_temperature = float(dc_temperature)
        self.sup_weight = float(sup_weight)
        self.dc_weight = float(dc_weight)
        self.queue_size = None if queue_size is None else int(queue_size)
        self.confidence_mask = bool(confidence_mask)
        self.exclude_self = bool(exclude_self)
        self.ce_only_epochs = int(ce_only_epochs)
        self.embedding_dim = int(proj_output_dim)
        hidden = int(proj_hidden_dim or max(2 * self.feature_dim, 4096))
        self.student = Student(self.backbone, self.feature_dim, hidden, self.embedding_dim, classes)
        self.teacher = self.momentum_of(self.student)
        top5 = min(5, classes)
        self.val_top1 = MulticlassAccuracy(classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(classes, top_k=top5, average="micro")
        # steps of this epoch where the confidence mask dropped every sample of a batch
        # that the student mostly got wrong (a device counter: no host sync per step)
        self.register_buffer("masked_out_steps", torch.zeros((), dtype=torch.long), False)

    @property
    def uses_bank(self) -> bool:
        """True when a neighbour term is on; with both weights 0 the method is the CE baseline."""
        return self.sup_weight > 0 or self.dc_weight > 0

    def bank_size(self) -> int:
        """``queue_size`` or, when unset, the samples one epoch trains over all ranks.

        The epoch is the one the trainer runs (``trainer.num_training_batches``, so
        ``limit_train_batches`` counts), so the bank never keeps unwritten slots (label -1)
        after epoch 0.

        Raises:
            ValueError: When ``queue_size`` is unset and the training loader has no length.
        """
        if self.queue_size is not None:
            return self.queue_size
        trainer = self.trainer
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise ValueError(
                f"{type(self).__name__}(queue_size=None) sizes the bank to one epoch, but the "
                "training loader has no length; set queue_size."
            )
        return max(1, int(batches)) * per_device_batch_size(trainer) * int(trainer.world_size)

    def neighbour_specs(self) -> list[BankSpec]:
        """Teacher embeddings with labels, sample ids and teacher probabilities."""
        if not self.uses_bank:
            return []
        classes = int(self.num_classes or 0)
        return [
            BankSpec(
                name="queue",
                size=self.bank_size(),
                dim=self.embedding_dim,
                payloads={
                    "label": PayloadSpec(),
                    "sample_id": PayloadSpec(),
                    "probs": PayloadSpec((classes,), torch.float32, 1.0 / classes),
                },
                scope="global",
                k=self.k if self.sup_weight > 0 else 1,
                exclude_self=self.exclude_self,
            )
        ]

    def step(self, batch: TrainBatch) -> StepOutput:
        """CE, then (after epoch 0) neighbour and distributional-consistency terms."""
        x, labels, ids = batch.views[0], batch.labels, batch.sample_ids
        feats, z, logits = self.student(x)
        q = F.normalize(z, dim=1)
        with torch.no_grad():
            _, z_t, logits_t = self.teacher(x)
            k = F.normalize(z_t, dim=1)
            probs_t = logits_t.float().softmax(dim=1)
        ce = F.cross_entropy(logits, labels, reduction="none")
        acc1 = (logits.detach().argmax(dim=1) == labels).float().mean()
        logs: dict[str, Tensor | float] = {}
        neighbour_phase = self.current_epoch >= self.ce_only_epochs
        if neighbour_phase and self.uses_bank:
            bank = self.bank("queue")
            own = None
            if self.exclude_self:
                own = bank.own_entries(ids)
            mask = None
            if self.confidence_mask:
                mask = logits.detach().float().softmax(dim=1).min(dim=1).values > CONFIDENCE_FLOOR
                ce = ce * mask
                logs["kept"] = mask.float().mean()
                self.masked_out_steps += (~mask.any() & (acc1 < 0.5)).long()
            loss = ce.mean()
            if self.sup_weight > 0:
                l_sup = cone_neighbour_loss(
                    q,
                    labels,
                    bank.embeddings,
                    bank.payloads["label"],
                    self.k,
                    self.sup_temperature,
                    exclude=own,
                )
                loss = loss + self.sup_weight * l_sup
                logs["l_sup"] = l_sup.detach()
            if self.dc_weight > 0:
                l_dc = cone_dc_loss(
                    logits,
                    k,
                    bank.embeddings,
                    bank.payloads["probs"],
                    self.dc_temperature,
                    mask=mask,
                    exclude=own,
                )
                loss = loss + self.dc_weight * l_dc
                logs["l_dc"] = l_dc.detach()
        else:
            loss = ce.mean()
        logs["ce"] = ce.mean().detach()
        logs["acc1"] = acc1
        logs["teacher_acc1"] = (logits_t.argmax(dim=1) == labels).float().mean()
        logs["z_norm"] = z.detach().float().norm(dim=1).mean()
        logs |= self.bank_logs(q, k, labels, ids)
        enqueue = {}
        if self.uses_bank:
            enqueue["queue"] = {
                "embeddings": k,
                "label": labels,
                "sample_id": ids,
                "probs": probs_t,
            }
        return StepOutput(loss=loss, features=feats, logs=logs, enqueue=enqueue)

    def bank_logs(self, q: Tensor, k: Tensor, labels: Tensor, ids: Tensor) -> dict[str, Tensor]:
        """Diagnostics of the student's ``k`` nearest bank entries (logging steps only).

        The positive pair is the student's and the teacher's embedding of the same image.
        """
        positive = (q.detach() * k).sum(dim=1)
        if not (self.uses_bank and self.logging_step):
            return self.neighbour_logs(labels, ids, q, positive_sims=positive)
        exclude = ids if self.exclude_self else None
        found = self.bank("queue").search(q.detach(), self.k, exclude_ids=exclude)
        return self.neighbour_logs(labels, ids, q, found, positive)

    def on_train_epoch_end(self) -> None:
        """Warn when the confidence mask left the classifier untrained in this epoch."""
        steps = int(self.masked_out_steps)
        self.masked_out_steps.zero_()
        if steps:
            rank_zero_warn(
                f"CoNe epoch {self.current_epoch}: in {steps} step(s) the confidence mask "
                "(method.confidence_mask) removed cross-entropy and L_dc from every sample of a "
                "batch the student mostly misclassified: its logits have grown so large that "
                "every class probability but one is below 1e-8, and nothing trains the "
                "classifier back (see train/kept and train/z_norm). This follows a loss "
                "blow-up; set trainer.gradient_clip_val (e.g. 1.0), lower optim.lr or lengthen "
                "optim.warmup_epochs, or set method.confidence_mask=false."
            )

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Top-1/top-5 of the student's logits (the paper's metric), plus the base monitors."""
        images, labels = eval_batch(batch)
        feats, _, logits = self.student(self._to_memory_format(images))
        self.validate_features(feats, labels)
        self.val_top1.update(logits, labels)
        self.val_top5.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        """Log the classifier's accuracy (percent) with the base monitors."""
        self.log_accuracy("val/acc1", self.val_top1, prog_bar=True)
        self.log_accuracy("val/acc5", self.val_top5)
        super().on_validation_epoch_end()


class Supervised(CoNe):
    """Cross-entropy training: CoNe with both neighbour weights 0, its baseline.

    Every argument is CoNe's but ``sup_weight`` and ``dc_weight``, which are 0: the same
    network, teacher and recipe, trained with cross-entropy alone (no bank).
    """

    fixed: ClassVar[dict[str, Any]] = {"sup_weight": 0.0, "dc_weight": 0.0}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**with_fixed(Supervised, kwargs))
