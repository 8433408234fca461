"""Per-step schedules: linear warm-up + cosine learning rate, cosine momentum."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimiser step ``step``.

    Linear from ``1 / (warmup_steps + 1)`` to 1 over ``warmup_steps`` steps, then a
    half-cosine from 1 down to ``min_ratio`` at ``total_steps``.

    Args:
        step: Optimiser steps taken so far.
        total_steps: Steps of the whole run.
        warmup_steps: Warm-up length in steps.
        min_ratio: Final multiplier.

    Returns:
        The multiplier in ``[min_ratio, 1]``.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """EMA momentum rising from ``base`` to ``final`` on a half-cosine (BYOL schedule).

    ``m(t) = final - (final - base) * (cos(pi * t / T) + 1) / 2``.
    """
    progress = min(1.0, step / max(1, total_steps))
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
