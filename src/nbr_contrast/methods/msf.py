"""MSF: mean shift for self-supervised learning, on a BYOL frame.

Koohpayegani, Tejankar, Pirsiavash. "Mean Shift for Self-Supervised Learning", ICCV 2021
(arXiv 2105.07269); official code UMBCvision/MSF ``train_msf.py``.

Online backbone ``f``, projector ``g`` and predictor ``h``; the target ``f_t, g_t`` is an
EMA of ``f, g``. The query view ``x_q`` gets strong augmentation, the target view ``x_t``
weak (``conf/views/msf.yaml``). With ``q = norm(h(g(f(x_q))))``, the target
``t = norm(g_t(f_t(x_t)))`` and ``b_i1..b_ik`` the ``k`` memory entries nearest to ``t_i``
(the target's own distances choose them; ``t_i`` itself is in the memory)::

    L = mean_i (1/k) Σ_j ‖q_i − b_ij‖²

``k = 1`` (``method=byol``) is BYOL: the target is its own nearest neighbour, so the
baseline needs no bank and differs from MSF only in ``k``.

Deviations and options:
    * The memory is the bank of past targets plus every target of this batch on all ranks
      (:func:`~nbr_contrast.losses.msf.msf_neighbours`); the batch is enqueued after the step.
      The official code enqueues first, so its memory lacks the ``B`` oldest entries ours
      can still return for one step.
    * The bank is global across ranks and checkpointed; no shuffle-BN (as CO2).
    * Hidden layers are ``Linear(bias=False) → BN → ReLU``: the official bias before BN
      is cancelled by the BN's mean.
    * The small-data recipe (``conf/method/msf.yaml``) keeps the official values except the
      bank size; MSF publishes no small-data recipe.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from nbr_contrast.losses import msf_loss, msf_neighbours
from nbr_contrast.methods.batch import StepOutput, TrainBatch
from nbr_contrast.methods.hyperparameters import check_at_least, check_hyperparameters, with_fixed
from nbr_contrast.methods.momentum import MomentumMethod
from nbr_contrast.methods.optimisation import OptimConfig
from nbr_contrast.models.heads import MLPHead
from nbr_contrast.monitors.neighbour_quality import neighbour_quality
from nbr_contrast.neighbours.bank import PayloadSpec
from nbr_contrast.neighbours.index import BankSpec

MSF_OPTIM = OptimConfig(
    name="sgd",
    lr=0.05,
    weight_decay=1e-4,
    exclude_bias_and_norm=False,
    warmup_epochs=0,
    min_lr_ratio=0.0,
    cosine_interval="epoch",
)
"""MSF's recipe (official ``train_msf.py``; ``conf/optim/msf.yaml``)."""


class MSF(MomentumMethod):
    """MSF (and BYOL with ``k=1``) as a LightningModule.

    Defaults: the official ``train_msf.py`` values (``conf/method/msf.yaml``).

    Args:
        proj_hidden_dim: Projector and predictor hidden width (None: 2 × backbone features,
            as the official ``hidden_dim = feat_dim * 2``).
        proj_output_dim: Embedding size (None: backbone features / 4, ``feat_dim // 4``).
        k: Neighbours per target (5, paper's default; 1 = BYOL).
        queue_size: Memory-bank size (16,384, ours for small images, as the command line picks
            for images of at most 64 px; official 128,000 on ImageNet).
        momentum: EMA momentum (0.99, constant: ``final_momentum`` 0.99).
        final_momentum: Momentum at the end of training (0.99).
        exclude_self: Leave a sample's own earlier targets out of the memory's candidates
            (``False``, as the official code; its target itself, from the batch, is always
            its first neighbour).
        **kwargs: :class:`~nbr_contrast.methods.momentum.MomentumMethod`'s and
            :class:`~nbr_contrast.methods.base.BaseMethod`'s arguments.
    """

    optim_recipe: ClassVar[OptimConfig] = MSF_OPTIM
    view_recipe: ClassVar[str] = "msf"

    def __init__(
        self,
        *,
        proj_hidden_dim: int | None = None,
        proj_output_dim: int | None = None,
        k: int = 5,
        queue_size: int = 16384,
        momentum: float = 0.99,
        final_momentum: float = 0.99,
        exclude_self: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(momentum=momentum, final_momentum=final_momentum, **kwargs)
        check_hyperparameters(
            type(self).__name__,
            proj_hidden_dim=proj_hidden_dim,
            proj_output_dim=proj_output_dim,
            queue_size=queue_size,
        )
        check_at_least(type(self).__name__, "k", k, 1, "1: BYOL")
        self.k = int(k)
        self.queue_size = int(queue_size)
        self.exclude_self = bool(exclude_self)
        hidden = int(proj_hidden_dim or 2 * self.feature_dim)
        self.embedding_dim = int(proj_output_dim or self.feature_dim // 4)
        self.projector = MLPHead(self.feature_dim, [hidden], self.embedding_dim)
        self.predictor = MLPHead(self.embedding_dim, [hidden], self.embedding_dim)
        self.add_momentum_encoder()

    def neighbour_specs(self) -> list[BankSpec]:
        """The memory of past targets (none for BYOL, whose only neighbour is the target)."""
        if self.k == 1:
            return []
        payloads = {"label": PayloadSpec(), "sample_id": PayloadSpec()}
        size, dim = self.queue_size, self.embedding_dim
        return [
            BankSpec(
                "memory",
                size,
                dim,
                payloads,
                scope="global",
                k=self.k,
                exclude_self=self.exclude_self,
            )
        ]

    def mean_shift_targets(
        self, t: Tensor, labels: Tensor, ids: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The ``k`` neighbours of each target in memory ∪ batch, and their diagnostics.

        Self-retrieval counts the memory's earlier entries of the sample only: the target
        itself, from the batch, is every sample's first neighbour by design.
        """
        found = self.bank("memory").search(
            t, self.k, exclude_ids=ids if self.exclude_self else None
        )
        batch_t = self.gather(t)
        neighbours, picked = msf_neighbours(t, found.sims, found.embeddings, batch_t)
        if not self.logging_step:
            return neighbours, {}
        batch = t.shape[0], batch_t.shape[0]
        from_batch = {
            "label": self.gather(labels).expand(*batch),
            "sample_id": torch.full(batch, -2, dtype=ids.dtype, device=ids.device),
            "step": torch.full(batch, self.global_step, dtype=torch.long, device=ids.device),
        }
        chosen = {
            name: torch.cat([memory, from_batch[name]], dim=1).gather(1, picked)
            for name, memory in (
                ("label", found.payloads["label"]),
                ("sample_id", found.payloads["sample_id"]),
                ("step", found.written_at),
            )
        }
        quality = neighbour_quality(
            labels,
            ids,
            chosen["label"],
            chosen["sample_id"],
            chosen["step"],
            self.global_step,
            found.sims[:, 0],
        )
        return neighbours, {f"nbr/{k}": v for k, v in quality.items()}

    def step(self, batch: TrainBatch) -> StepOutput:
        """Regress the strong view's prediction onto the weak view's target neighbours."""
        x_q, x_t = batch.views[0], batch.views[1]
        feats = self.features(x_q)
        q = F.normalize(self.predictor(self.projector(feats)), dim=1)
        t = self.keys(x_t)
        labels, ids = batch.labels, batch.sample_ids
        logs = self.neighbour_logs(labels, ids, q, positive_sims=(q.detach() * t).sum(dim=1))
        if self.k == 1:
            return StepOutput(loss=msf_loss(q, t.unsqueeze(1)), features=feats, logs=logs)
        neighbours, quality = self.mean_shift_targets(t, labels, ids)
        entries = {"embeddings": t, "label": labels, "sample_id": ids}
        return StepOutput(
            loss=msf_loss(q, neighbours),
            features=feats,
            logs=logs | quality,
            enqueue={"memory": entries},
        )


class BYOL(MSF):
    """BYOL (Grill et al., NeurIPS 2020, arXiv 2006.07733): MSF with ``k=1``.

    MSF's baseline: every argument is MSF's but ``k``, which is 1 (the target is its own
    only neighbour, so no memory bank is kept).
    """

    fixed: ClassVar[dict[str, Any]] = {"k": 1}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**with_fixed(BYOL, kwargs))
