"""LARS optimiser (You et al., 2017) in the form solo-learn's recipes use.

solo-learn (``solo/utils/lars.py``, from Lightning Bolts) adapts every parameter ``w`` with
gradient ``g`` that is not excluded and has ``‖w‖ > 0`` and ``‖g‖ > 0``::

    r = η·‖w‖ / (‖g‖ + wd·‖w‖ + ε)
    r = min(r / lr, 1)                     (clip_lr: the schedule caps the trust ratio)
    d = (g + wd·w)·r

and leaves the others (``d = g``, no weight decay). Momentum ``b ← μ·b + d`` (``b = d`` on
the first step), then ``w ← w − lr·b``. With ``clip_lr`` each layer's step is
``min(η‖w‖/(‖g‖+wd‖w‖), lr)`` times the update, so warm-up and the cosine cap the trust
ratio instead of multiplying it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

EPS = 1e-8
"""solo-learn's ``eps`` in the trust-ratio denominator."""


class LARS(Optimizer):
    """SGD with momentum and solo-learn's layer-wise trust ratio (see the module docstring).

    Parameter groups with ``lars_exclude=True`` (biases and norm weights, solo-learn's
    ``exclude_bias_n_norm``) skip both the weight decay and the adaptation, as does any
    parameter whose weight or gradient norm is zero.

    Each group is updated with multi-tensor (``torch._foreach_*``) ops: a fixed handful of
    kernels per group instead of about a dozen per parameter, so the step does not become
    launch-bound on a GPU. No value is read back to the host.

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate.
        momentum: Momentum.
        weight_decay: Weight decay.
        eta: Trust coefficient ``η``.
        clip_lr: Cap the trust ratio by the learning rate (solo-learn's ``clip_lr``).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip_lr: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "clip_lr": clip_lr,
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

    @staticmethod
    def _adapted(group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        """``(g + wd·w)·r`` where both norms are positive, ``g`` elsewhere."""
        wd = float(group["weight_decay"])
        w_norm = torch.stack(torch._foreach_norm(params))
        g_norm = torch.stack(torch._foreach_norm(grads))
        active = (w_norm > 0) & (g_norm > 0)
        ratio = group["eta"] * w_norm / (g_norm + wd * w_norm + EPS)
        if group["clip_lr"]:
            ratio = torch.clamp(ratio / group["lr"], max=1.0)
        dtype = grads[0].dtype
        scale = torch.where(active, ratio, 1.0).to(dtype)
        if wd:
            decay = torch.where(active, wd, 0.0).to(dtype)
            grads = torch._foreach_add(grads, torch._foreach_mul(params, list(decay.unbind())))
        return torch._foreach_mul(grads, list(scale.unbind()))

    def _update_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """Adapt the group's gradients, update the momentum buffers, apply them."""
        grads = [p.grad for p in params]
        if not group["lars_exclude"]:
            grads = self._adapted(group, params, grads)
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
