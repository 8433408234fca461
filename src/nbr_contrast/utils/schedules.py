"""Per-step schedules: linear warm-up + cosine learning rate, cosine momentum."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int,
    min_ratio: float = 0.0,
    steps_per_epoch: float | None = None,
) -> float:
    """Learning-rate multiplier at optimiser step ``step``.

    Linear from ``1 / (warmup_steps + 1)`` to 1 over ``warmup_steps`` steps, then a
    half-cosine from 1 down to ``min_ratio`` at ``total_steps``. With ``steps_per_epoch``
    the cosine holds its value through each epoch and moves at epoch boundaries (CoNe's
    official schedule: ``lr_T = min + ½(base − min)(1 + cos(π·T / (E − W)))`` for the
    ``T``-th epoch after ``W`` warm-up epochs of ``E``).

    Args:
        step: Optimiser steps taken so far.
        total_steps: Steps of the whole run.
        warmup_steps: Warm-up length in steps.
        min_ratio: Final multiplier.
        steps_per_epoch: Step the cosine once per this many steps (``None``: every step).

    Returns:
        The multiplier in ``[min_ratio, 1]``.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    after = step - warmup_steps
    if steps_per_epoch:
        after = math.floor(after / steps_per_epoch) * steps_per_epoch
    progress = min(1.0, after / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """EMA momentum rising from ``base`` to ``final`` on a half-cosine (BYOL schedule).

    ``m(t) = final - (final - base) * (cos(pi * t / T) + 1) / 2``.
    """
    progress = min(1.0, step / max(1, total_steps))
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def ema_initial_share(total_steps: int, base: float, final: float = 1.0) -> float:
    """Share of its initial weights an EMA target still holds after ``total_steps`` updates.

    With ``θ_t ← m_t·θ_t + (1 − m_t)·θ_o`` the initial weights keep a factor ``Π_t m_t``;
    here ``m_t`` is :func:`cosine_momentum` at steps ``1 .. total_steps - 1`` (the updates a
    run of ``total_steps`` optimiser steps makes). A share well above zero at the end of a run
    means the momentum encoder is still largely its random initialisation.

    Args:
        total_steps: Optimiser steps of the run.
        base: Initial momentum.
        final: Final momentum.

    Returns:
        The share in ``[0, 1]``.
    """
    log_share = 0.0
    for step in range(1, total_steps):
        m = cosine_momentum(step, total_steps, base, final)
        if m <= 0.0:
            return 0.0
        log_share += math.log(m)
    return math.exp(log_share)
