"""The optimiser and learning-rate schedule every method trains with.

Parameter groups (weight decay off for biases and norms when ``optim.exclude_bias_and_norm``;
the online probe with its own learning rate and no decay), SGD, solo-learn's LARS or AdamW,
and a per-step linear warm-up followed by a cosine (per step or per epoch) decay.

Two differences from solo-learn's recipes, kept on purpose:

* The online probe is never LARS-adapted. solo-learn's LARS adapts every parameter of more
  than one dimension, the classifier's weight included; here the probe is a monitor, and a
  trust ratio would make its step depend on the backbone's feature norm.
* The warm-up rises linearly from ``lr / (W + 1)`` at the first step to ``lr`` after ``W``
  steps (:func:`~nbr_contrast.utils.schedules.warmup_cosine`), where solo-learn's
  ``LinearWarmupCosineAnnealingLR`` starts at ``warmup_start_lr = 3e-5``. With solo-learn's
  10 warm-up epochs of 390 steps (CIFAR, batch 128), the first step's rate is ``lr / 3901``
  (1.0e-4 for NNCLR's lr 0.4) against 3e-5. solo-learn's reaches ``lr`` one step earlier;
  at any step the two rates differ by at most ``lr / (W + 1)``, one step of the warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from nbr_contrast.utils.lars import LARS
from nbr_contrast.utils.schedules import warmup_cosine

OPTIMISERS = ("sgd", "lars", "adamw")
COSINE_INTERVALS = ("step", "epoch")


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    The learning rate is ``lr * global_batch / 256`` where the global batch counts every
    device on every node and gradient accumulation.

    Attributes:
        name: ``sgd``, ``lars`` or ``adamw``.
        lr: Base learning rate for a batch of 256.
        scale_lr: Scale ``lr`` linearly with the global batch.
        weight_decay: Weight decay.
        momentum: SGD/LARS momentum.
        betas: AdamW betas.
        eta: LARS trust coefficient.
        clip_lr: LARS caps each layer's trust ratio by the learning rate (solo-learn's
            ``clip_lr``; see :mod:`nbr_contrast.utils.lars`).
        exclude_bias_and_norm: Exempt biases and norm weights (1-D parameters) from weight
            decay and LARS adaptation (solo-learn's ``exclude_bias_n_norm``).
        warmup_epochs: Linear warm-up length (fractional epochs allowed), stepped per step.
        min_lr_ratio: Final learning rate as a fraction of the peak.
        cosine_interval: ``step`` (the cosine advances every optimiser step, as solo-learn)
            or ``epoch`` (once per epoch after the warm-up, as CoNe's official schedule).
        probe_lr: Base learning rate of the online linear probe (no weight decay), scaled
            with the batch like ``lr`` (solo-learn's ``classifier_lr``).
    """

    name: str = "lars"
    lr: float = 0.4
    scale_lr: bool = True
    weight_decay: float = 1e-5
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eta: float = 0.02
    clip_lr: bool = False
    exclude_bias_and_norm: bool = True
    warmup_epochs: float = 10.0
    min_lr_ratio: float = 0.0
    cosine_interval: str = "step"
    probe_lr: float = 0.1


def as_optim_config(
    value: OptimConfig | Mapping[str, Any] | None, recipe: OptimConfig
) -> OptimConfig:
    """The optimiser recipe a method trains with.

    Args:
        value: An :class:`OptimConfig`; a mapping of the fields that differ from
            ``recipe`` (``{"lr": 0.3}``); or ``None`` for ``recipe`` itself.
        recipe: The method's own recipe (its ``optim_recipe``).

    Raises:
        ValueError: For an unknown field or a value that cannot work.
        TypeError: For a value of another type.
    """
    if value is None:
        optim = recipe
    elif isinstance(value, OptimConfig):
        optim = value
    elif isinstance(value, Mapping) or hasattr(value, "keys"):
        valid = [f.name for f in fields(OptimConfig)]
        unknown = sorted(set(value.keys()) - set(valid))
        if unknown:
            raise ValueError(f"optim has unknown key(s) {unknown}; valid keys: {', '.join(valid)}.")
        optim = replace(recipe, **{k: value[k] for k in value})
    else:
        raise TypeError(
            f"optim={type(value).__name__}: pass an OptimConfig or a mapping of its fields."
        )
    check_optim(optim)
    return optim


def check_optim(optim: OptimConfig) -> None:
    """Raise one clear ``ValueError`` for a recipe that cannot work."""
    if optim.name not in OPTIMISERS:
        raise ValueError(f"optim.name={optim.name!r} is unknown; valid: {', '.join(OPTIMISERS)}.")
    if optim.cosine_interval not in COSINE_INTERVALS:
        valid = ", ".join(COSINE_INTERVALS)
        raise ValueError(f"optim.cosine_interval={optim.cosine_interval!r}; valid: {valid}.")
    for name in ("lr", "probe_lr"):
        if not float(getattr(optim, name)) > 0:
            raise ValueError(f"optim.{name}={getattr(optim, name)} must be positive.")
    for name in ("weight_decay", "warmup_epochs", "min_lr_ratio", "momentum", "eta"):
        if not float(getattr(optim, name)) >= 0:
            raise ValueError(f"optim.{name}={getattr(optim, name)} must be >= 0.")
    if float(optim.min_lr_ratio) > 1:
        raise ValueError(f"optim.min_lr_ratio={optim.min_lr_ratio} must be in [0, 1].")
    if len(optim.betas) != 2:
        raise ValueError(f"optim.betas={list(optim.betas)} must be two numbers, e.g. [0.9,0.999].")


def param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    probe: nn.Module | None,
    optim: OptimConfig,
    lr_scale: float,
) -> list[dict[str, Any]]:
    """The optimiser's parameter groups.

    Args:
        named_parameters: The method's parameters (the probe's, named ``probe.*``, skipped).
        probe: The online linear probe (``optim.probe_lr × lr_scale``, no weight decay), if
            the method has one.
        optim: The optimiser recipe.
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
    if probe is not None:
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
    groups: list[dict[str, Any]], optim: OptimConfig, lr: float
) -> torch.optim.Optimizer:
    """SGD, LARS (``optim.clip_lr`` as solo-learn) or AdamW over ``groups`` at peak ``lr``.

    Raises:
        ValueError: If ``optim.name`` is not one of ``OPTIMISERS``.
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


def steps_per_epoch(trainer: Any, total_steps: int) -> float:
    """Optimiser steps per epoch of the Trainer's run (``total_steps`` in all)."""
    if trainer.max_steps < 0 and trainer.max_epochs:
        return total_steps / trainer.max_epochs
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        return float(total_steps)
    return batches / trainer.accumulate_grad_batches


def warmup_cosine_scheduler(
    opt: torch.optim.Optimizer, optim: OptimConfig, total: int, steps_per_epoch: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step linear warm-up over ``optim.warmup_epochs``, then cosine to ``min_lr_ratio``.

    Args:
        opt: The optimiser.
        optim: The optimiser recipe (``cosine_interval``: ``step`` decays every step, ``epoch``
            holds the rate within an epoch as CoNe's official schedule).
        total: Optimiser steps of the run.
        steps_per_epoch: Optimiser steps per epoch.

    Raises:
        ValueError: If ``optim.cosine_interval`` is not ``step`` or ``epoch``.
    """
    if optim.cosine_interval not in COSINE_INTERVALS:
        raise ValueError(f"optim.cosine_interval={optim.cosine_interval!r}; valid: step, epoch.")
    warmup = round(float(optim.warmup_epochs) * steps_per_epoch)
    min_ratio = float(optim.min_lr_ratio)
    per_epoch = steps_per_epoch if optim.cosine_interval == "epoch" else None
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, total, warmup, min_ratio, per_epoch)
    )
