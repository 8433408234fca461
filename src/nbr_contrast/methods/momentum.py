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
def ema_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """``θ_t ← m·θ_t + (1 − m)·θ_o`` for parameters; buffers (BN statistics) are copied.

    Args:
        online: The trained module.
        target: Its momentum copy (same architecture).
        momentum: ``m`` in [0, 1].
    """
    online_params = [p.detach() for p in online.parameters()]
    target_params = list(target.parameters())
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)
    for b_o, b_t in zip(online.buffers(), target.buffers(), strict=True):
        b_t.copy_(b_o)
