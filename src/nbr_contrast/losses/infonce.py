"""MoCo-style InfoNCE (van den Oord et al. 2018; He et al., CVPR 2020, arXiv 1911.05722)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]


def moco_logits(
    q: Tensor, k: Tensor, queue: Tensor, temperature: float, exclude: Tensor | None = None
) -> Tensor:
    """MoCo logits with the positive in column 0.

    ``logits_i = [q_i·k_i, q_i·n_1, …, q_i·n_K] / τ`` with ``q``, ``k`` and the queue
    entries ``n`` L2-normalised here.

    Args:
        q: Queries ``[B, D]``.
        k: Positive keys ``[B, D]`` (row ``i`` is the positive of query ``i``).
        queue: Negative keys ``[K, D]``.
        temperature: ``τ``.
        exclude: ``[B, K]`` queue entries left out of row ``i``'s negatives (their logit is
            ``-inf``), e.g. the query's own earlier keys; ``None`` keeps them all.

    Returns:
        Logits ``[B, 1 + K]``. Nothing is detached: stop-gradient is the caller's job.
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    queue = F.normalize(queue, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negatives = q @ queue.T
    if exclude is not None:
        negatives = negatives.masked_fill(exclude, float("-inf"))
    return torch.cat([positive, negatives], dim=1) / temperature


def info_nce(
    q: Tensor,
    k: Tensor,
    queue: Tensor | None,
    temperature: float,
    reduction: Reduction = "mean",
    exclude: Tensor | None = None,
) -> Tensor:
    """InfoNCE of queries against their positive keys.

    With a queue (MoCo v1/v2)::

        L_i = −log exp(q_i·k_i/τ) / (exp(q_i·k_i/τ) + Σ_{n∈queue} exp(q_i·n/τ))

    Without a queue (``queue=None``, in-batch negatives) the other keys of the batch are
    the negatives::

        L_i = −log exp(q_i·k_i/τ) / Σ_j exp(q_i·k_j/τ)

    MoCo v3's loss is this times ``2τ`` with the keys gathered from every rank; the
    method uses :func:`~nbr_contrast.losses.snclr.snclr_loss` with no neighbours, which
    includes both.

    All vectors are L2-normalised here. Nothing is detached: momentum keys normally carry
    no gradient already; detach ``k``/``queue`` before calling if they might.

    Args:
        q: Queries ``[B, D]``.
        k: Positive keys ``[B, D]``.
        queue: Negative keys ``[K, D]`` or ``None`` for in-batch negatives.
        temperature: ``τ``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample ``[B]``).
        exclude: ``[B, K]`` queue entries left out of each row's negatives (with a queue).

    Returns:
        The reduced loss (scalar) or per-sample losses ``[B]``.
    """
    if queue is None:
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / temperature
        targets = torch.arange(q.shape[0], device=q.device)
    else:
        logits = moco_logits(q, k, queue, temperature, exclude)
        targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, targets, reduction=reduction)
