"""Momentum (EMA) encoders: copies, updates, and :class:`MomentumMethod`, their base class."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from nbr_contrast.methods.base import BaseMethod
from nbr_contrast.methods.hyperparameters import check_hyperparameters
from nbr_contrast.utils.schedules import cosine_momentum, ema_initial_share

EMA_INIT_SHARE_WARNING = 0.01
"""Warn when a momentum encoder keeps more than this share of its initial weights."""


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


class MomentumMethod(BaseMethod):
    """A method with momentum (EMA) copies of some of its modules.

    One place for what every momentum method shares (solo-learn's ``BaseMomentumMethod``):
    the (online, copy) pairs, the cosine schedule ``momentum → final_momentum`` per
    optimiser step, the EMA update before each forward, the warning when a short run leaves
    the copy close to its random initialisation, and the key encoder: the momentum
    backbone and projector made by :meth:`add_momentum_encoder`, which embed keys
    (:meth:`keys`) and the whole-dataset graph (:meth:`graph_encoder`).

    A subclass builds its online modules, then makes their copies with
    :meth:`momentum_of` (CoNe's teacher copies the whole student) or
    :meth:`add_momentum_encoder` (copies of ``backbone`` and ``projector``).

    Args:
        momentum: Base EMA momentum ``m`` of the cosine schedule.
        final_momentum: Momentum at the end of training (equal to ``momentum``: constant).
        copy_ema_buffers: Copy the online encoder's buffers (BatchNorm running statistics)
            into the momentum encoder at every update. Off by default, as in every official
            implementation (MoCo, MoCo v3, CoNe, MSF) and solo-learn, which update the
            parameters only: the momentum encoder's BatchNorm keeps running statistics of
            its own forward passes (they are what the dataset graph embeds with).
        **kwargs: :class:`~nbr_contrast.methods.base.BaseMethod`'s arguments.
    """

    def __init__(
        self,
        *,
        momentum: float = 0.99,
        final_momentum: float = 1.0,
        copy_ema_buffers: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_hyperparameters(type(self).__name__, momentum=momentum, final_momentum=final_momentum)
        self.momentum = float(momentum)
        self.final_momentum = float(final_momentum)
        self.copy_ema_buffers = bool(copy_ema_buffers)
        self.register_buffer("ema_last_step", torch.tensor(-1, dtype=torch.long))
        self._ema_last_step: int | None = None
        self._momentum_pairs: list[tuple[nn.Module, nn.Module]] = []
        self.momentum_backbone: nn.Module | None = None
        self.momentum_projector: nn.Module | None = None

    def momentum_of(self, online: nn.Module) -> nn.Module:
        """A frozen copy of ``online``, EMA-updated from it before every forward."""
        target = momentum_copy(online)
        self._momentum_pairs.append((online, target))
        return target

    def add_momentum_encoder(self) -> None:
        """Make ``momentum_backbone`` and ``momentum_projector``: EMA copies of the online ones."""
        self.momentum_backbone = self.momentum_of(self.backbone)
        self.momentum_projector = self.momentum_of(self.projector)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum copy) pairs, in the order they were made."""
        return list(self._momentum_pairs)

    def momentum_range(self) -> tuple[float, float]:
        """Base and final EMA momentum of the cosine schedule (``momentum`` → ``final``)."""
        return self.momentum, self.final_momentum

    def graph_encoder(self) -> nn.Module:
        """Momentum backbone + projector (the key space), else the online backbone."""
        if self.momentum_backbone is None or self.momentum_projector is None:
            return self.backbone
        return nn.Sequential(self.momentum_backbone, self.momentum_projector)

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """Normalised momentum keys ``norm(g_k(f_k(x)))`` (needs :meth:`add_momentum_encoder`)."""
        if self.momentum_backbone is None or self.momentum_projector is None:
            raise RuntimeError(f"{type(self).__name__} has no momentum encoder to embed keys.")
        feats = torch.flatten(self.momentum_backbone(x), 1)
        return F.normalize(self.momentum_projector(feats), dim=1)

    def before_step(self, log: bool) -> None:
        """EMA-update every momentum pair once per optimiser step, before the forward.

        Counting ``trainer.global_step`` (optimiser steps) makes the schedule independent
        of gradient accumulation; the last step seen is a buffer, so resume is exact. Its
        host copy is read from the buffer once per fit, so steps never read it back.
        """
        step = int(self.trainer.global_step) if self._trainer is not None else 0
        if self._ema_last_step is None:
            self._ema_last_step = int(self.ema_last_step)
        if step <= self._ema_last_step:
            return
        if self._ema_last_step >= 0:
            base, final = self.momentum_range()
            total = max(1, int(self.trainer.estimated_stepping_batches))
            m = cosine_momentum(step, total, base, final)
            for online, target in self._momentum_pairs:
                ema_update(online, target, m, self.copy_ema_buffers)
            if log:
                self.log("train/momentum", m, on_step=True, on_epoch=False)
        self.ema_last_step.fill_(step)
        self._ema_last_step = step

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load weights and buffers; the EMA step's host copy is re-read at the next step."""
        self._ema_last_step = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def on_train_start(self) -> None:
        """Warn when the momentum schedule is too short to leave the random init behind."""
        super().on_train_start()
        self._ema_last_step = None
        base, final = self.momentum_range()
        total = max(1, int(self.trainer.estimated_stepping_batches))
        share = ema_initial_share(total, base, final)
        if share > EMA_INIT_SHARE_WARNING:
            rank_zero_warn(
                f"With momentum={base} rising to final_momentum={final} over "
                f"{total} optimiser steps, the momentum encoder still holds {share:.0%} of its "
                "random initialisation at the end of the run, so its keys, bank entries and "
                "targets stay close to an untrained network's. Train longer or lower "
                "momentum (and final_momentum; method.* on the command line) for short schedules."
            )
