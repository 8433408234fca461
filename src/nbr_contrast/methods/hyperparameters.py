"""Checking a method's constructor arguments: one clear line for a value that cannot work."""

from __future__ import annotations

from typing import Any

from nbr_contrast.utils.ranges import range_error, rule_for


class ArgumentError(ValueError, TypeError):
    """A constructor argument that cannot work (a value out of range, or of the wrong type).

    The message is one line, ``NNCLR(temperature=0.0): temperature must be > 0; change
    temperature.``; the fields let the command line name its own setting (``method.*``).

    Attributes:
        who: The class being built.
        name: The argument.
        value: The value given.
        reason: What it must be (``must be > 0``).
    """

    def __init__(
        self, who: str, name: str, value: Any, reason: str, message: str | None = None
    ) -> None:
        self.who, self.name, self.value, self.reason = who, name, value, reason
        super().__init__(message or f"{who}({name}={value!r}): {name} {reason}; change {name}.")


def check_hyperparameters(who: str, **values: Any) -> None:
    """Check numeric arguments against the rules of :mod:`nbr_contrast.utils.ranges`.

    Args:
        who: The class being built (named in the message).
        **values: The arguments, by name; ``None`` passes.

    Raises:
        ArgumentError: For a string or other non-number where a number is expected, or a
            number out of its range, NaN or infinite.
    """
    for name, value in values.items():
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, int | float):
            if rule_for(name) is not None:
                raise ArgumentError(who, name, value, "must be a number")
            continue
        reason = range_error(name, value)
        if name == "num_classes" and value < 1:
            reason = "must be at least 1"
        if reason is not None:
            raise ArgumentError(who, name, value, reason)


def check_at_least(who: str, name: str, value: int, minimum: int, why: str) -> None:
    """Refuse ``value < minimum`` for argument ``name``, saying ``why`` the minimum.

    Raises:
        ArgumentError: Naming the argument, its minimum and why.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(who, name, value, "must be a whole number")
    if value < minimum:
        raise ArgumentError(who, name, value, f"must be at least {minimum} ({why})")


def with_fixed(baseline: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with a baseline's neighbour switch set (a baseline's constructor uses it).

    Args:
        baseline: The baseline class; its ``fixed`` class attribute is the switch (the
            arguments it fixes, ``{"alpha": 0.0}``), its parent the method it belongs to.
        kwargs: The arguments given; a fixed one may be repeated with its fixed value
            (``load_from_checkpoint`` passes every recorded argument back).

    Raises:
        ArgumentError: When a fixed argument is given another value (its ``reason`` says
            the value is fixed).
    """
    parent = baseline.__mro__[1].__name__
    for name, value in baseline.fixed.items():
        if name in kwargs and kwargs[name] != value:
            given = kwargs[name]
            raise ArgumentError(
                baseline.__name__,
                name,
                given,
                f"is fixed at {value} (the neighbour switch of this baseline)",
                f"{baseline.__name__} is {parent} with {name}={value}; for {name}={given!r} use "
                f"{parent}({name}={given!r}).",
            )
    return {**kwargs, **baseline.fixed}
