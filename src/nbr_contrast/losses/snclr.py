"""SNCLR loss (Ge et al., ICLR 2023, arXiv 2303.17142)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def snclr_weights(y: Tensor, neighbours_own: Tensor) -> Tensor:
    """Parameter-free positiveness weights of the official code ("cosine" attention).

    ::

        w_ij = softmax_j(norm(y_i)·norm(NN_j(k_i)))      (no temperature)

    The gradient reaches ``y`` (the official code does not detach the weights); the
    neighbours are constants (detached).

    Args:
        y: Projector outputs of the query view ``[B, D]``.
        neighbours_own: Each sample's own key neighbours ``[B, K, D]``.

    Returns:
        Weights ``[B, K]``, each row summing to 1.
    """
    sims = torch.einsum(
        "bd,bkd->bk", F.normalize(y, dim=1), F.normalize(neighbours_own.detach(), dim=2)
    )
    return sims.softmax(dim=1)


def snclr_loss(
    q: Tensor,
    y: Tensor | None,
    keys: Tensor,
    neighbours: Tensor,
    temperature: float,
    weights: Tensor | None = None,
    detach_weights: bool = False,
    positive_offset: int = 0,
) -> Tensor:
    """Soft-neighbour contrastive loss, one view direction.

    Columns are all ``N·(K+1)`` candidates ``C = [k_j, NN_1(k_j), …, NN_K(k_j)]_j`` (``j``
    major, so key ``j`` is column ``j·(K+1)`` and its neighbours follow it). With
    ``ℓ_i = log_softmax(norm(q_i)·norm(C)ᵀ/τ)`` and ``o = positive_offset``::

        L = 2τ · mean_i [ −ℓ_i(k_{o+i}) − Σ_j w_ij ℓ_i(NN_j(k_{o+i})) ]

    Row ``i``'s target is 1 on its own key and ``w_ij`` on its own ``K`` neighbours (0 on
    every other column); it sums to ``1 + Σ_j w_ij = 2`` and is not renormalised, as in the
    official code. The ``2τ`` factor is MoCo v3's. With all weights 0 the loss is MoCo v3's
    InfoNCE over the same columns times ``2τ``. Keys and neighbours are constants (detached);
    ``q`` and, through the default weights, ``y`` receive gradient. Deviation from the paper:
    the default weights are the official code's parameter-free cosine softmax
    (:func:`snclr_weights`), not the paper's cross-attention module; pass ``weights`` to use
    a learned one.

    Args:
        q: Predictor outputs of the query view ``[B, D]``.
        y: Projector outputs of the query view ``[B, D]``, used for the default weights;
            may be ``None`` when ``weights`` is given.
        keys: Momentum keys of the other view ``[N, D]`` (``N = B`` locally, ``W·B`` when
            gathered across ranks).
        neighbours: The keys' bank neighbours ``[N, K, D]``.
        temperature: ``τ``.
        weights: Precomputed weights ``[B, K]`` (e.g. from a learned cross-attention);
            default :func:`snclr_weights` of ``y`` and the own neighbours.
        detach_weights: Stop the gradient through the weights (the official code does not).
        positive_offset: Index in ``keys`` of row 0's own key (``rank · B`` when gathered).

    Returns:
        Scalar loss.

    Raises:
        ValueError: On inconsistent shapes, an offset that does not fit, or neither ``y``
            nor ``weights`` given.
    """
    b = q.shape[0]
    n, k, d = neighbours.shape
    if keys.shape != (n, d):
        raise ValueError(f"keys must be [{n}, {d}] to match neighbours, got {list(keys.shape)}")
    if positive_offset < 0 or positive_offset + b > n:
        raise ValueError(f"positive_offset={positive_offset} with {b} rows exceeds {n} keys")
    own = slice(positive_offset, positive_offset + b)
    if weights is None:
        if y is None:
            raise ValueError("snclr_loss needs y to compute the weights when weights is None")
        weights = snclr_weights(y, neighbours[own])
    if weights.shape != (b, k):
        raise ValueError(f"weights must be [{b}, {k}], got {list(weights.shape)}")
    if detach_weights:
        weights = weights.detach()
    candidates = torch.cat([keys.unsqueeze(1), neighbours], dim=1).detach()
    candidates = F.normalize(candidates.reshape(n * (k + 1), d), dim=1)
    log_prob = F.log_softmax(F.normalize(q, dim=1) @ candidates.T / temperature, dim=1)
    first = (torch.arange(b, device=q.device) + positive_offset) * (k + 1)
    own_cols = first.unsqueeze(1) + torch.arange(k + 1, device=q.device)
    own_log_prob = log_prob.gather(1, own_cols)
    target = torch.cat([weights.new_ones(b, 1), weights], dim=1)
    return 2 * temperature * (-(target * own_log_prob).sum(dim=1)).mean()
