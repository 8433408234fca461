"""Checking a method's constructor arguments: one clear line for a value that cannot work."""

from __future__ import annotations

from typing import Any

from nbr_contrast.utils.ranges import range_error, rule_for


def check_hyperparameters(who: str, **values: Any) -> None:
    """Check numeric arguments against the rules of :mod:`nbr_contrast.utils.ranges`.

    Args:
        who: The class being built (named in the message).
        **values: The arguments, by name; ``None`` passes.

    Raises:
        TypeError: For a string or other non-number where a number is expected.
        ValueError: For a number out of its range, NaN or infinite.
    """
    for name, value in values.items():
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, int | float):
            if rule_for(name) is not None:
                raise TypeError(f"{who}({name}={value!r}): {name} must be a number.")
            continue
        reason = range_error(name, value)
        if name == "num_classes" and value < 1:
            reason = "must be at least 1"
        if reason is not None:
            raise ValueError(f"{who}({name}={value}): {name} {reason}; change {name}.")


def with_fixed(baseline: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with a baseline's neighbour switch set (a baseline's constructor uses it).

    Args:
        baseline: The baseline class; its ``fixed`` class attribute is the switch (the
            arguments it fixes, ``{"alpha": 0.0}``), its parent the method it belongs to.
        kwargs: The arguments given; a fixed one may be repeated with its fixed value
            (``load_from_checkpoint`` passes every recorded argument back).

    Raises:
        ValueError: When a fixed argument is given another value.
    """
    parent = baseline.__mro__[1].__name__
    for name, value in baseline.fixed.items():
        if name in kwargs and kwargs[name] != value:
            raise ValueError(
                f"{baseline.__name__} is {parent} with {name}={value}; for {name}="
                f"{kwargs[name]!r} use {parent}({name}={kwargs[name]!r})."
            )
    return {**kwargs, **baseline.fixed}
