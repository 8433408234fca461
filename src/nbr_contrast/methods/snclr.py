"""SNCLR: soft neighbours are positive supporters, on a MoCo v3 frame.

Ge, Wang, Tong, Chen, Song, Luo. "Soft Neighbors are Positive Supporters in Contrastive
Visual Representation Learning", ICLR 2023 (arXiv 2303.17142). MoCo v3: Chen, Xie, He,
ICCV 2021 (arXiv 2104.02057).

Online ``f``, projector ``g`` and predictor ``h``, MoCo v3's heads for the backbone
(``moco/builder.py``, as solo-learn's ``mocov3.py``): on a ResNet a 2-layer projector and a
2-layer predictor without a last BN; on a ViT a 3-layer projector and a predictor ending
in BN (last BNs without affine). SNCLR released only its ViT heads; on a ResNet it uses the
same heads as its MoCo v3 baseline. Momentum copies of ``f`` and ``g`` (m 0.99 → 1, cosine
per step). For every momentum key ``k_i`` the bank of past view-2 keys gives the top-K
neighbours ``NN_1..K(k_i)``; the columns are every key and its neighbours from all ranks.
Row ``i``'s target is 1 on its own key and ``w_ij = softmax_j(norm(y_i)·norm(NN_j(k_i)))``
on its own neighbours (``y`` = projector output of the query view)::

    L(q1, k2) = 2τ · mean_i[-ℓ_i(k2_i) - Σ_j w_ij ℓ_i(NN_j(k2_i))],  total L(q1,k2) + L(q2,k1)

``k=0`` (also ``method=mocov3``) is MoCo v3: in-batch keys only, no bank.

Deviations and options:
    * ``attention: cosine`` (default) is the official code's parameter-free weighting, not
      detached (``detach_weights`` to change). ``attention: learned`` is the paper's
      single-head cross-attention: ``softmax((W_q y)·(W_k NN)/√d)`` with learned
      projections.
    * The bank is global across ranks by default (the official code keeps one per GPU:
      ``bank_scope: rank``) and is checkpointed (the official one is not).
    * ``exclude_self`` drops bank entries carrying the sample's own id, so a
      sample never retrieves its own older key.
    * The default recipe is for small data: ``k`` 5 and a 16,384-entry bank
      (official ImageNet values 30 and 128,000), with solo-learn's MoCo v3 CIFAR optimiser
      (``conf/optim/mocov3.yaml``) and BYOL's views; the official ViT recipe is AdamW
      (``optim=adamw``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nbr_contrast.losses import snclr_loss, snclr_weights
from nbr_contrast.methods.batch import StepOutput, TrainBatch
from nbr_contrast.methods.hyperparameters import (
    ArgumentError,
    check_at_least,
    check_hyperparameters,
    with_fixed,
)
from nbr_contrast.methods.momentum import MomentumMethod
from nbr_contrast.methods.optimisation import OptimConfig
from nbr_contrast.models.backbones import is_transformer
from nbr_contrast.models.heads import MLPHead
from nbr_contrast.neighbours.bank import PayloadSpec
from nbr_contrast.neighbours.index import BankSpec
from nbr_contrast.utils.dist import gather_no_grad, rank

ATTENTIONS = ("cosine", "learned")
SCOPES = ("global", "rank")
MOCOV3_OPTIM = OptimConfig(name="lars", lr=0.3, weight_decay=1e-6, clip_lr=True, probe_lr=0.3)
"""MoCo v3's CIFAR recipe (solo-learn ``mocov3.yaml``; ``conf/optim/mocov3.yaml``)."""


class CrossAttentionWeights(nn.Module):
    """Single-head cross-attention scores of a query over its neighbours (learned variant).

    ``w_ij = softmax_j((W_q y_i)·(W_k NN_ij) / √d)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, y: Tensor, neighbours: Tensor) -> Tensor:
        """Weights ``[B, K]`` for queries ``y [B, D]`` and neighbours ``[B, K, D]``."""
        q = self.query(y).unsqueeze(1)
        k = self.key(neighbours)
        return ((q * k).sum(-1) * self.scale).softmax(dim=1)


class SNCLR(MomentumMethod):
    """SNCLR (and MoCo v3 with ``k=0``) as a LightningModule.

    Defaults: the official code's values unless noted (``conf/method/snclr.yaml``).

    Args:
        proj_hidden_dim: Projector hidden width (4096).
        proj_output_dim: Embedding size (256).
        pred_hidden_dim: Predictor hidden width (4096).
        temperature: ``τ`` (0.2).
        k: ``K`` neighbours per key (5, ours for small data; official 30 on
            ImageNet; 0 = MoCo v3).
        queue_size: Bank size (16,384, ours for small data; official 128,000).
        bank_scope: ``global`` (default) or ``rank`` (per-GPU, as the official code).
        attention: ``cosine`` (official, parameter-free) or ``learned``.
        detach_weights: Stop gradients through the positiveness weights.
        exclude_self: Never return bank entries of the sample's own id.
        predictor_bias: A bias on the predictor's output layer (``False``: MoCo v3's
            ``builder.py`` and solo-learn's ``mocov3.py`` build every linear layer without
            one; checkpoints of nbr_contrast 0.1 have one, and load with it).
        momentum: Base key-encoder momentum (0.99).
        final_momentum: Momentum at the end of training (1.0).
        **kwargs: :class:`~nbr_contrast.methods.momentum.MomentumMethod`'s and
            :class:`~nbr_contrast.methods.base.BaseMethod`'s arguments.
    """

    optim_recipe: ClassVar[OptimConfig] = MOCOV3_OPTIM
    view_recipe: ClassVar[str] = "byol"

    def __init__(
        self,
        *,
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 256,
        pred_hidden_dim: int = 4096,
        temperature: float = 0.2,
        k: int = 5,
        queue_size: int = 16384,
        bank_scope: str = "global",
        attention: str = "cosine",
        detach_weights: bool = False,
        exclude_self: bool = True,
        predictor_bias: bool = False,
        momentum: float = 0.99,
        final_momentum: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(momentum=momentum, final_momentum=final_momentum, **kwargs)
        name = type(self).__name__
        check_hyperparameters(
            name,
            proj_hidden_dim=proj_hidden_dim,
            proj_output_dim=proj_output_dim,
            pred_hidden_dim=pred_hidden_dim,
            temperature=temperature,
            queue_size=queue_size,
        )
        check_at_least(name, "k", k, 0, "0: MoCo v3, no neighbours")
        if attention not in ATTENTIONS:
            raise ArgumentError(
                name, "attention", attention, f"must be one of {', '.join(ATTENTIONS)}"
            )
        if bank_scope not in SCOPES:
            valid = ", ".join(SCOPES)
            raise ArgumentError(name, "bank_scope", bank_scope, f"must be one of {valid}")
        self.temperature = float(temperature)
        self.k = int(k)
        self.queue_size = int(queue_size)
        self.embedding_dim = int(proj_output_dim)
        self.bank_scope = str(bank_scope)
        self.detach_weights = bool(detach_weights)
        self.exclude_self = bool(exclude_self)
        vit = is_transformer(self.backbone)
        self.projector = MLPHead(
            self.feature_dim,
            [proj_hidden_dim] * (2 if vit else 1),
            proj_output_dim,
            last_bn=True,
            last_bn_affine=False,
        )
        self.predictor = MLPHead(
            proj_output_dim,
            [pred_hidden_dim],
            proj_output_dim,
            last_bn=vit,
            last_bn_affine=False,
            last_bias=predictor_bias and not vit,
        )
        self.add_momentum_encoder()
        self.attention = (
            CrossAttentionWeights(self.embedding_dim) if attention == "learned" else None
        )

    def neighbour_specs(self) -> list[BankSpec]:
        """Bank of momentum projections of view 2 (none for MoCo v3)."""
        if self.k == 0:
            return []
        return [
            BankSpec(
                name="support",
                size=self.queue_size,
                dim=self.embedding_dim,
                payloads={"label": PayloadSpec(), "sample_id": PayloadSpec()},
                scope=self.bank_scope,
                k=self.k,
                exclude_self=self.exclude_self,
            )
        ]

    def direction(
        self, q: Tensor, y: Tensor, keys: Tensor, labels: Tensor, ids: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``L(q, k)`` for one direction, with its neighbour diagnostics."""
        tau = self.temperature
        offset = rank() * q.shape[0]
        all_keys = gather_no_grad(keys)
        positive = (F.normalize(q.detach(), dim=1) * keys).sum(dim=1)
        if self.k == 0:
            empty = all_keys.new_zeros(all_keys.shape[0], 0, all_keys.shape[1])
            loss = snclr_loss(q, y, all_keys, empty, tau, positive_offset=offset)
            return loss, self.neighbour_logs(labels, ids, q, positive_sims=positive)
        exclude = ids if self.exclude_self else None
        found = self.bank("support").search(keys, self.k, exclude_ids=exclude)
        neighbours = found.embeddings
        weights = self.attention(y, neighbours) if self.attention is not None else None
        loss = snclr_loss(
            q,
            y,
            all_keys,
            gather_no_grad(neighbours),
            tau,
            weights=weights,
            detach_weights=self.detach_weights,
            positive_offset=offset,
        )
        stats = self.neighbour_logs(labels, ids, q, found, positive)
        if self.logging_step:
            with torch.no_grad():
                w = weights if weights is not None else snclr_weights(y, neighbours)
                own = labels[:, None]
                same = ((found.payloads["label"] == own) & (own >= 0)).float()
                known = (own >= 0).float().sum().clamp_min(1.0)
                stats |= {
                    "weight_mean": w.mean(),
                    "weight_entropy": -(w * w.clamp_min(1e-12).log()).sum(1).mean(),
                    "nbr/weighted_agreement": (w * same).sum() / known,
                }
        return loss, stats

    def step(self, batch: TrainBatch) -> StepOutput:
        """Symmetric SNCLR loss ``L(q1, k2) + L(q2, k1)``."""
        labels, ids = batch.labels, batch.sample_ids
        x1, x2 = batch.views[0], batch.views[1]
        f1, f2 = self.features(x1), self.features(x2)
        y1, y2 = self.projector(f1), self.projector(f2)
        q1, q2 = self.predictor(y1), self.predictor(y2)
        k1, k2 = self.keys(x1), self.keys(x2)
        loss_a, stats = self.direction(q1, y1, k2, labels, ids)
        loss_b, _ = self.direction(q2, y2, k1, labels, ids)
        enqueue = {}
        if self.k:
            enqueue["support"] = {"embeddings": k2, "label": labels, "sample_id": ids}
        return StepOutput(loss=loss_a + loss_b, features=f1, logs=stats, enqueue=enqueue)


class MoCoV3(SNCLR):
    """MoCo v3 (Chen, Xie, He, ICCV 2021, arXiv 2104.02057): SNCLR with no neighbours.

    SNCLR's baseline: every argument is SNCLR's but ``k``, which is 0 (in-batch
    keys only, no bank).
    """

    fixed: ClassVar[dict[str, Any]] = {"k": 0}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**with_fixed(MoCoV3, kwargs))
