"""Valid ranges of numeric settings, by name: one rule set for constructors and configs.

A rule applies to every setting whose field name it matches (``temperature``, anything
ending in ``_dim``, ...), so a new hyper-parameter named like the others is checked without
a line of its own: the methods' constructors check their arguments with these rules, and
the command line checks every numeric value of its config groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """A valid range for every numeric setting whose field name ``applies``."""

    applies: Callable[[str], bool]
    valid: Callable[[float], bool]
    requirement: str


RULES = (
    Rule(lambda n: "temperature" in n, lambda v: v > 0, "must be > 0"),
    Rule(lambda n: "momentum" in n, lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    Rule(lambda n: n.endswith("_k"), lambda v: v >= 1, "must be at least 1"),
    Rule(lambda n: n == "k", lambda v: v >= 0, "must be >= 0"),
    Rule(
        lambda n: n == "size" or n.endswith(("_size", "_dim")), lambda v: v >= 1, "must be positive"
    ),
    Rule(lambda n: n.endswith("_p"), lambda v: 0 <= v <= 1, "must be in [0, 1] (a probability)"),
    Rule(lambda n: n.endswith("_rate"), lambda v: 0 <= v < 1, "must be in [0, 1)"),
    Rule(lambda n: n == "lr" or n.endswith("_lr"), lambda v: v > 0, "must be positive"),
    Rule(lambda n: n == "std", lambda v: v > 0, "must be positive"),
    Rule(lambda n: n == "betas", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    Rule(
        lambda n: n.endswith(("_epochs", "_steps", "_weight")) or n.startswith(("num_", "n_")),
        lambda v: v >= 0,
        "must be >= 0",
    ),
    Rule(lambda n: n == "weight_decay", lambda v: v >= 0, "must be >= 0"),
    Rule(lambda n: n.endswith("_pct"), lambda v: 0 < v <= 1, "must be in (0, 1]"),
    Rule(lambda n: n == "epochs" or n.endswith("_iters"), lambda v: v >= 1, "must be at least 1"),
    Rule(lambda n: n == "label_smoothing", lambda v: 0 <= v < 1, "must be in [0, 1)"),
    Rule(lambda n: n == "layer_decay", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    Rule(lambda n: n in ("mixup", "cutmix"), lambda v: v >= 0, "must be >= 0 (0: off)"),
)


def rule_for(name: str) -> Rule | None:
    """The first rule that applies to setting ``name``, if any."""
    return next((rule for rule in RULES if rule.applies(name)), None)


def range_error(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be setting ``name`` (not finite, or outside its rule), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    broken = (rule for rule in RULES if rule.applies(name) and not rule.valid(value))
    return next((rule.requirement for rule in broken), None)
