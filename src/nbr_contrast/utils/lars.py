"""LARS optimiser (You et al., 2017) as used by SimCLR, BYOL and NNCLR."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer


class LARS(Optimizer):
    """SGD with momentum and a layer-wise trust ratio.

    For each parameter ``w`` with gradient ``g`` (weight decay folded in,
    ``g ← g + wd·w``), the update is scaled by ``eta·‖w‖ / ‖g‖`` when both norms are
    positive. Parameter groups with ``lars_exclude=True`` (biases and norm weights, as
    in the papers) skip both the decay and the adaptation.

    Each group is updated with multi-tensor (``torch._foreach_*``) ops: a fixed handful of
    kernels per group instead of about a dozen per parameter, so the step does not become
    launch-bound on a GPU. No value is read back to the host.

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate.
        momentum: Momentum.
        weight_decay: Weight decay.
        eta: Trust coefficient.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Take one optimisation step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update_group(group, params)
        return loss

    def _update_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """Trust-scale the group's gradients, update the momentum buffers, apply them."""
        grads = [p.grad for p in params]
        if not group["lars_exclude"]:
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            w_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads))
            trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, 1.0)
            grads = torch._foreach_mul(grads, list(trust.to(grads[0].dtype).unbind()))
        states = [self.state[p] for p in params]
        if all("momentum_buffer" in s for s in states):
            buffers = [s["momentum_buffer"] for s in states]
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, grads)
        else:
            for state, grad in zip(states, grads, strict=True):
                if "momentum_buffer" in state:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                else:
                    state["momentum_buffer"] = grad.clone()
            buffers = [s["momentum_buffer"] for s in states]
        torch._foreach_add_(params, buffers, alpha=-group["lr"])
