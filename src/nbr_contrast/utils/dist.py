"""Distributed helpers that degrade to no-ops on a single process.

The rule every method follows: columns of a loss that come from other ranks *and carry
gradient* are gathered with :func:`gather_with_grad` (NNCLR's predictions ``p``, the
negatives of its n-way loss); columns that are constants are gathered with
:func:`gather_no_grad` (SNCLR/MoCo v3's momentum keys and their bank neighbours). Banks
are filled by the neighbour-index callback with :func:`gather_no_grad` for ``global``
banks (identical on every rank) and not gathered at all for ``rank`` banks. Methods whose
negatives come only from a global bank (CO2, MoCo v2, CLIM, CoNe) gather nothing in the
loss: every rank already holds the same bank.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_dist() -> bool:
    """Whether a default process group is available and initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    """Rank of this process in the default group (0 when not distributed)."""
    return dist.get_rank() if is_dist() else 0


def destroy() -> None:
    """Destroy the default process group if one is initialised (a no-op otherwise)."""
    if is_dist():
        dist.destroy_process_group()


def _all_gather_cat(x: Tensor) -> Tensor:
    """All-gather ``x`` (same shape on every rank) and concatenate along dim 0."""
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather forward; all-reduce (sum) of the gradient and local slice backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.batch = x.shape[0]
        return _all_gather_cat(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, letting gradient flow back to every rank.

    Every rank must pass a tensor of the same shape ``[B, ...]``; the result is
    ``[W·B, ...]`` in rank order, so this rank's rows start at ``rank() * B``.

    Gradient scaling: rank ``r`` computes a mean loss ``L_r`` over its own ``B`` anchors,
    whose columns are the gathered ``[W·B, ...]`` tensor. Rows coming from rank ``s`` receive
    gradient ``∂L_r/∂x_s`` on every rank ``r``; the backward all-reduce sums these, so rank
    ``s`` back-propagates ``Σ_r ∂L_r/∂x_s`` into its own parameters. DDP then averages the
    parameter gradients over the ``W`` ranks, giving ``∇(1/W · Σ_r L_r)``, which is exactly the
    gradient of the mean loss over the concatenated batch of ``W·B`` anchors in one process.
    No extra factor of ``W`` is needed anywhere.

    Args:
        x: Local tensor ``[B, ...]``.

    Returns:
        ``[W·B, ...]``; ``x`` itself (unchanged, same autograd node) when not distributed.
    """
    if not is_dist() or world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0 without gradient.

    Args:
        x: Local tensor ``[B, ...]``, same shape on every rank.

    Returns:
        ``[W·B, ...]`` in rank order, detached; ``x.detach()`` when not distributed, so the
        result never carries gradient whatever the world size.
    """
    if not is_dist() or world_size() == 1:
        return x.detach()
    return _all_gather_cat(x.detach())
