"""NNCLR: nearest-neighbour contrastive learning.

Dwibedi, Aytar, Tompson, Sermanet, Zisserman. "With a Little Help from My Friends:
Nearest-Neighbor Contrastive Learning of Visual Representations", ICCV 2021
(arXiv 2104.14548).

Each view is projected (``z = g(f(x))``) and predicted (``p = h(z)``). The positive for
``p2_i`` is the support-set entry nearest to ``z1_i``::

    L_i = -log exp(NN(z1_i)·p2_i/τ) / Σ_k exp(NN(z1_i)·p2_k/τ),   L = ½(L(z1,p2) + L(z2,p1))

The support set is a global FIFO bank of ``norm(z1)`` (gathered from every rank, so all
ranks agree), filled *after* the loss so a batch never retrieves itself. Negatives
``p_k`` are gathered from all ranks with a gradient-carrying all-gather.

Deviations and options:
    * ``use_nn=False`` replaces ``NN(z)`` by ``norm(z)`` itself, with the gradient flowing
      through it (the paper's ablation: a SimCLR-style baseline with a predictor, the only
      difference from NNCLR being the neighbour). ``stop_grad_self=True`` detaches that
      positive instead, as ``NN(z)`` is.
    * ``nn_warmup_steps`` (default 0, the paper's behaviour) uses ``z`` instead of ``NN(z)``
      for the first steps, while the bank still holds its random initial entries.
    * The bank is initialised with random unit vectors, as in the released
      re-implementations; it is sized ``queue_size`` (solo-learn 65,536, paper 98,304).
    * The default recipe is solo-learn's CIFAR one (``conf/method/nnclr.yaml``): τ 0.2
      (paper 0.1), LARS lr 0.4·B/256 with ``clip_lr``, wd 1e-5, BYOL's views without blur on
      small images.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from nbr_contrast.losses import nnclr_loss
from nbr_contrast.methods.base import BaseMethod
from nbr_contrast.methods.batch import StepOutput, TrainBatch
from nbr_contrast.methods.hyperparameters import check_hyperparameters
from nbr_contrast.methods.optimisation import OptimConfig
from nbr_contrast.models.heads import MLPHead
from nbr_contrast.neighbours.bank import PayloadSpec, SearchResult
from nbr_contrast.neighbours.index import BankSpec
from nbr_contrast.utils.dist import gather_with_grad, rank


class NNCLR(BaseMethod):
    """NNCLR as a LightningModule (see the module docstring for the method).

    Defaults: solo-learn's CIFAR recipe (``conf/method/nnclr.yaml``, which cites each value).

    Args:
        proj_hidden_dim: Projector hidden width (2048; paper 2048).
        proj_output_dim: Embedding size ``d`` (256; paper 256).
        pred_hidden_dim: Predictor hidden width (4096; paper 4096).
        temperature: ``τ`` (0.2; paper 0.1).
        queue_size: Support-set size (65,536; paper 98,304).
        use_nn: Use the nearest neighbour as the positive (``False``: ablation baseline).
        stop_grad_self: When ``z`` itself is the positive (``use_nn=False`` or during
            ``nn_warmup_steps``), stop its gradient as ``NN(z)``'s is.
        nn_warmup_steps: Steps during which ``z`` itself is used instead of ``NN(z)``.
        exclude_self: Never take a sample's own earlier entry as its neighbour (``False``,
            as the paper and solo-learn: a support set larger than an epoch holds every
            image's previous entry, which is then often its nearest).
        **kwargs: :class:`~nbr_contrast.methods.base.BaseMethod`'s arguments (backbone,
            num_classes, optim, kNN monitor).
    """

    optim_recipe: ClassVar[OptimConfig] = OptimConfig(
        name="lars", lr=0.4, weight_decay=1e-5, clip_lr=True, probe_lr=0.1
    )
    view_recipe: ClassVar[str] = "byol"

    def __init__(
        self,
        *,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 256,
        pred_hidden_dim: int = 4096,
        temperature: float = 0.2,
        queue_size: int = 65536,
        use_nn: bool = True,
        stop_grad_self: bool = False,
        nn_warmup_steps: int = 0,
        exclude_self: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_hyperparameters(
            type(self).__name__,
            proj_hidden_dim=proj_hidden_dim,
            proj_output_dim=proj_output_dim,
            pred_hidden_dim=pred_hidden_dim,
            temperature=temperature,
            queue_size=queue_size,
            nn_warmup_steps=nn_warmup_steps,
        )
        self.temperature = float(temperature)
        self.queue_size = int(queue_size)
        self.embedding_dim = int(proj_output_dim)
        self.use_nn = bool(use_nn)
        self.stop_grad_self = bool(stop_grad_self)
        self.nn_warmup_steps = int(nn_warmup_steps)
        self.exclude_self = bool(exclude_self)
        self.projector = MLPHead(
            self.feature_dim, [proj_hidden_dim, proj_hidden_dim], proj_output_dim, last_bn=True
        )
        self.predictor = MLPHead(proj_output_dim, [pred_hidden_dim], proj_output_dim)

    def neighbour_specs(self) -> list[BankSpec]:
        """The support set: ``norm(z1)`` with labels and sample ids (for the diagnostics)."""
        return [
            BankSpec(
                name="support",
                size=self.queue_size,
                dim=self.embedding_dim,
                payloads={"label": PayloadSpec(), "sample_id": PayloadSpec()},
                scope="global",
                k=1,
                exclude_self=self.exclude_self,
            )
        ]

    def positives(self, z: Tensor, ids: Tensor) -> tuple[Tensor, SearchResult | None]:
        """``NN(z)`` from the support set (or ``z`` itself), and the search's result."""
        z = F.normalize(z, dim=1)
        if not (self.use_nn and self.global_step >= self.nn_warmup_steps):
            return (z.detach() if self.stop_grad_self else z), None
        exclude = ids if self.exclude_self else None
        found = self.bank("support").search(z.detach(), k=1, exclude_ids=exclude)
        return found.embeddings[:, 0], found

    def step(self, batch: TrainBatch) -> StepOutput:
        """Two views → projections, predictions, symmetric NN-positive InfoNCE."""
        labels, ids = batch.labels, batch.sample_ids
        x1, x2 = batch.views[0], batch.views[1]
        f1, f2 = self.features(x1), self.features(x2)
        z1, z2 = self.projector(f1), self.projector(f2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        nn1, found = self.positives(z1, ids)
        nn2, _ = self.positives(z2, ids)
        offset = rank() * x1.shape[0]
        tau = self.temperature
        loss = 0.5 * (
            nnclr_loss(nn1, gather_with_grad(p2), tau, positive_offset=offset)
            + nnclr_loss(nn2, gather_with_grad(p1), tau, positive_offset=offset)
        )
        z1n = F.normalize(z1.detach(), dim=1)
        positive = (z1n * F.normalize(z2.detach(), dim=1)).sum(dim=1)
        return StepOutput(
            loss=loss,
            features=f1,
            logs=self.neighbour_logs(labels, ids, z1n, found, positive),
            enqueue={"support": {"embeddings": z1n, "label": labels, "sample_id": ids}},
        )
