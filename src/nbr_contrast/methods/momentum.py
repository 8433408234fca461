"""Momentum (EMA) encoders: copies, updates and the schedule bookkeeping."""

from __future__ import annotations

import copy

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """Return a frozen deep copy of ``module`` to be updated by EMA only."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(
    online: nn.Module, target: nn.Module, momentum: float, copy_buffers: bool = False
) -> None:
    """``θ_t ← m·θ_t + (1 − m)·θ_o`` for parameters, as the official implementations do.

    Buffers (BatchNorm running statistics) are the target's own unless ``copy_buffers``
    copies the online module's into it.

    Args:
        online: The trained module.
        target: Its momentum copy (same architecture).
        momentum: ``m`` in [0, 1].
        copy_buffers: Also copy the online module's buffers.

    Raises:
        ValueError: If the two modules do not have matching parameter and buffer lists.
    """
    online_params = [p.detach() for p in online.parameters()]
    target_params = list(target.parameters())
    online_buffers, target_buffers = list(online.buffers()), list(target.buffers())
    if len(online_params) != len(target_params) or len(online_buffers) != len(target_buffers):
        raise ValueError("online and target modules have different parameters or buffers")
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)
    if copy_buffers and target_buffers:
        torch._foreach_copy_(target_buffers, online_buffers)
