"""The optimiser and learning-rate schedule every method trains with.

Parameter groups (weight decay off for biases and norms when ``optim.exclude_bias_and_norm``;
the online probe with its own learning rate and no decay), SGD, solo-learn's LARS or AdamW,
and a per-step linear warm-up followed by a cosine (per step or per epoch) decay.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from nbr_contrast.utils.lars import LARS
from nbr_contrast.utils.schedules import warmup_cosine

OPTIMISERS = ("sgd", "lars", "adamw")


def param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    probe: nn.Module,
    optim: DictConfig,
    lr_scale: float,
) -> list[dict[str, Any]]:
    """The optimiser's parameter groups.

    Args:
        named_parameters: The method's parameters (the probe's, named ``probe.*``, skipped).
        probe: The online linear probe (``optim.probe_lr × lr_scale``, no weight decay).
        optim: ``cfg.optim``.
        lr_scale: ``global batch / 256`` when ``optim.scale_lr``, else 1.

    Returns:
        Groups for :class:`torch.optim.Optimizer`; ``lars_exclude`` marks groups LARS leaves
        unadapted (solo-learn's exclusion of biases, norms and the probe).
    """
    decay, no_decay = [], []
    for name, p in named_parameters:
        if not p.requires_grad or name.startswith("probe."):
            continue
        if optim.exclude_bias_and_norm and p.ndim <= 1:
            no_decay.append(p)
        else:
            decay.append(p)
    groups: list[dict[str, Any]] = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    groups.append(
        {
            "params": list(probe.parameters()),
            "lr": float(optim.probe_lr) * lr_scale,
            "weight_decay": 0.0,
            "lars_exclude": True,
        }
    )
    return groups


def build_optimiser(
    groups: list[dict[str, Any]], optim: DictConfig, lr: float
) -> torch.optim.Optimizer:
    """SGD, LARS (``optim.clip_lr`` as solo-learn) or AdamW over ``groups`` at peak ``lr``.

    Raises:
        ValueError: If ``optim.name`` is not one of :data:`OPTIMISERS`.
    """
    if optim.name == "lars":
        return LARS(
            groups,
            lr=lr,
            momentum=optim.momentum,
            weight_decay=optim.weight_decay,
            eta=optim.eta,
            clip_lr=bool(optim.clip_lr),
        )
    for g in groups:
        g.pop("lars_exclude", None)
    if optim.name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay
        )
    if optim.name == "adamw":
        return torch.optim.AdamW(
            groups, lr=lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay
        )
    raise ValueError(f"Unknown optim.name={optim.name!r}. Valid: {', '.join(OPTIMISERS)}.")


def warmup_cosine_scheduler(
    opt: torch.optim.Optimizer, optim: DictConfig, total: int, steps_per_epoch: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step linear warm-up over ``optim.warmup_epochs``, then cosine to ``min_lr_ratio``.

    Args:
        opt: The optimiser.
        optim: ``cfg.optim`` (``cosine_interval``: ``step`` decays every step, ``epoch``
            holds the rate within an epoch as CoNe's official schedule).
        total: Optimiser steps of the run.
        steps_per_epoch: Optimiser steps per epoch.

    Raises:
        ValueError: If ``optim.cosine_interval`` is not ``step`` or ``epoch``.
    """
    if optim.cosine_interval not in ("step", "epoch"):
        raise ValueError(f"optim.cosine_interval={optim.cosine_interval!r}; valid: step, epoch.")
    warmup = round(float(optim.warmup_epochs) * steps_per_epoch)
    min_ratio = float(optim.min_lr_ratio)
    per_epoch = steps_per_epoch if optim.cosine_interval == "epoch" else None
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, total, warmup, min_ratio, per_epoch)
    )
