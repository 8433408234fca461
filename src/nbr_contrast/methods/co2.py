"""CO2: consistent contrast, on a MoCo v2 base.

Wei, Wang, Shen, Yuille. "CO2: Consistent Contrast for Unsupervised Visual Representation
Learning", ICLR 2021 (arXiv 2010.02217). MoCo v2: Chen, Fan, Girshick, He, 2020
(arXiv 2003.04297).

With ``q = norm(g(f(x1)))``, the momentum key ``p = norm(g_k(f_k(x2)))`` and the queue
snapshot ``n_1..n_K`` taken before this batch is enqueued::

    L_ins = -log exp(q·p/τ_ins) / (exp(q·p/τ_ins) + Σ_k exp(q·n_k/τ_ins))
    Q = softmax(q·N/τ_con),  P = sg(softmax(p·N/τ_con))
    L_con = ½ KL(P‖Q) + ½ KL(Q‖P)          (over the queue entries only)
    L = L_ins + α·L_con,  applied to both view directions and averaged.

``alpha=0`` is exactly MoCo v2 (``method=mocov2``), the baseline CO2 is measured against.

Implementation notes and deviations:
    * The queue is the shared neighbour index's bank ``queue`` (global across ranks,
      checkpointed). Both views' keys are enqueued after the step, so the loss always
      sees the snapshot from before the batch. solo-learn's MoCo v2+ keeps one queue per
      view (view-1 queries against past view-2 keys and vice versa); here both directions
      share one queue holding both views' keys, and ``queue_size`` 65,536 spans the same
      32,768 past samples as solo-learn's two queues of 32,768.
    * No shuffle-BN. Each view goes through the key encoder as its own batch, so a key's
      BN statistics never contain its query; under DDP, ``trainer=ddp`` turns on SyncBN,
      which computes the statistics over the global per-view batch (as MoCo v3 and
      solo-learn's MoCo v2+ do). Shuffle-BN only matters when query and key statistics
      share a batch on one device, which never happens here.
    * τ_con = 0.05 and α = 1 are the paper's reported defaults; they are marked
      unconfirmed in the design reference and exposed for sweeps. On small data and short
      schedules the term can pull every embedding to one point within tens of steps
      (``train/l_ins`` at chance, ``train/l_con`` near 0): the CPU smoke preset uses
      τ_con = 0.1 for that reason (docs/results.md).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from nbr_contrast.losses import co2_consistency, moco_infonce
from nbr_contrast.methods.batch import StepOutput, TrainBatch
from nbr_contrast.methods.hyperparameters import ArgumentError, check_hyperparameters, with_fixed
from nbr_contrast.methods.momentum import MomentumMethod
from nbr_contrast.methods.optimisation import OptimConfig
from nbr_contrast.models.heads import MLPHead
from nbr_contrast.neighbours.bank import PayloadSpec
from nbr_contrast.neighbours.index import BankSpec

MOCOV2_OPTIM = OptimConfig(
    name="sgd",
    lr=0.3,
    weight_decay=1e-4,
    exclude_bias_and_norm=False,
    warmup_epochs=10,
    probe_lr=0.3,
)
"""MoCo v2's CIFAR recipe (solo-learn ``mocov2plus.yaml``; ``conf/optim/mocov2.yaml``)."""


class CO2(MomentumMethod):
    """CO2 (and MoCo v2 with ``alpha=0``) as a LightningModule.

    Defaults: solo-learn's MoCo v2 CIFAR recipe (``mocov2plus.yaml``) and the CO2 paper's
    consistency values (``conf/method/co2.yaml`` cites each).

    Args:
        proj_hidden_dim: Head hidden width (2048).
        proj_hidden_bn: BatchNorm after the head's hidden layer (MoCo v2's head has none).
        proj_output_dim: Embedding size (256; MoCo v2 paper 128).
        temperature: ``τ_ins`` of the instance loss (0.2).
        consistency_temperature: ``τ_con`` (0.05, unconfirmed).
        alpha: Weight of the consistency term (1; 0 gives MoCo v2).
        queue_size: Length ``K`` of the one queue of both views' keys (65,536 = the 32,768
            past samples of solo-learn's two per-view queues).
        momentum: Base key-encoder momentum (0.99).
        final_momentum: Momentum at the end of training (0.999).
        exclude_self: Leave a sample's own earlier keys out of its negatives (``False``, as
            MoCo v2 and the CO2 paper: a queue larger than an epoch holds them).
        **kwargs: :class:`~nbr_contrast.methods.momentum.MomentumMethod`'s and
            :class:`~nbr_contrast.methods.base.BaseMethod`'s arguments.
    """

    optim_recipe: ClassVar[OptimConfig] = MOCOV2_OPTIM
    view_recipe: ClassVar[str] = "mocov2"

    def __init__(
        self,
        *,
        proj_hidden_dim: int = 2048,
        proj_hidden_bn: bool = False,
        proj_output_dim: int = 256,
        temperature: float = 0.2,
        consistency_temperature: float = 0.05,
        alpha: float = 1.0,
        queue_size: int = 65536,
        momentum: float = 0.99,
        final_momentum: float = 0.999,
        exclude_self: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(momentum=momentum, final_momentum=final_momentum, **kwargs)
        check_hyperparameters(
            type(self).__name__,
            proj_hidden_dim=proj_hidden_dim,
            proj_output_dim=proj_output_dim,
            temperature=temperature,
            consistency_temperature=consistency_temperature,
            queue_size=queue_size,
        )
        if not alpha >= 0:
            raise ArgumentError(type(self).__name__, "alpha", alpha, "must be >= 0")
        self.temperature = float(temperature)
        self.consistency_temperature = float(consistency_temperature)
        self.alpha = float(alpha)
        self.queue_size = int(queue_size)
        self.embedding_dim = int(proj_output_dim)
        self.exclude_self = bool(exclude_self)
        self.projector = MLPHead(
            self.feature_dim, [proj_hidden_dim], proj_output_dim, hidden_bn=proj_hidden_bn
        )
        self.add_momentum_encoder()

    def neighbour_specs(self) -> list[BankSpec]:
        """The negative queue of momentum keys, with labels and sample ids."""
        return [
            BankSpec(
                name="queue",
                size=self.queue_size,
                dim=self.embedding_dim,
                payloads={"label": PayloadSpec(), "sample_id": PayloadSpec()},
                scope="global",
                k=1,
                exclude_self=self.exclude_self,
            )
        ]

    def own_entries(self, ids: Tensor) -> Tensor | None:
        """``[B, K]``: the queue entries of each sample's own earlier keys (``exclude_self``)."""
        return self.bank("queue").own_entries(ids) if self.exclude_self else None

    def contrast(
        self, q: Tensor, k: Tensor, queue: Tensor, own: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Instance and consistency losses for one direction (``None``: no consistency term).

        With ``alpha=0`` (MoCo v2, CLIM) the consistency term is neither computed nor logged.
        ``own`` leaves the sample's own earlier keys out of both (``exclude_self``).
        """
        l_ins = moco_infonce(q, k, queue, self.temperature, own)
        if self.alpha == 0.0:
            return l_ins, None
        return l_ins, co2_consistency(q, k, queue, self.consistency_temperature, own)

    def step(self, batch: TrainBatch) -> StepOutput:
        """Symmetric MoCo v2 loss plus α·consistency over the queue snapshot."""
        labels, ids = batch.labels, batch.sample_ids
        x1, x2 = batch.views[0], batch.views[1]
        f1, f2 = self.features(x1), self.features(x2)
        q1 = F.normalize(self.projector(f1), dim=1)
        q2 = F.normalize(self.projector(f2), dim=1)
        k1, k2 = self.keys(x1), self.keys(x2)
        queue = self.bank("queue").embeddings.clone()
        own = self.own_entries(ids)
        ins_a, con_a = self.contrast(q1, k2, queue, own)
        ins_b, con_b = self.contrast(q2, k1, queue, own)
        loss = l_ins = 0.5 * (ins_a + ins_b)
        with torch.no_grad():  # how often P and Q pick the same most similar negative
            agree = ((q1 @ queue.T).argmax(1) == (k2 @ queue.T).argmax(1)).float().mean()
        logs: dict[str, Tensor | float] = {"l_ins": l_ins.detach(), "pq_top1_agree": agree}
        logs |= self.queue_logs(q1, k2, labels, ids)
        if con_a is not None and con_b is not None:
            l_con = 0.5 * (con_a + con_b)
            loss = l_ins + self.alpha * l_con
            logs["l_con"] = l_con.detach()
        return StepOutput(
            loss=loss,
            features=f1,
            logs=logs,
            enqueue={
                "queue": {
                    "embeddings": torch.cat([k1, k2]),
                    "label": torch.cat([labels, labels]),
                    "sample_id": torch.cat([ids, ids]),
                }
            },
        )

    def queue_logs(self, q: Tensor, k: Tensor, labels: Tensor, ids: Tensor) -> dict[str, Tensor]:
        """Diagnostics of the queries' nearest queue entries (logging steps only)."""
        if not self.logging_step:
            return {}
        exclude = ids if self.exclude_self else None
        found = self.bank("queue").search(q.detach(), k=1, exclude_ids=exclude)
        positive = (q.detach() * k).sum(dim=1)
        return self.neighbour_logs(labels, ids, q.detach(), found, positive)


class MoCoV2(CO2):
    """MoCo v2 (Chen, Fan, Girshick, He, 2020, arXiv 2003.04297): CO2 with ``alpha=0``.

    CO2's (and CLIM's) baseline: every argument is CO2's but ``alpha``, which is 0.
    """

    fixed: ClassVar[dict[str, Any]] = {"alpha": 0.0}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**with_fixed(MoCoV2, kwargs))
