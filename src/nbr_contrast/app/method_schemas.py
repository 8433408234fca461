"""The ``method`` group's schemas, made from the methods' constructors.

A method's keyword arguments are its config: ``conf/method/nnclr.yaml`` holds NNCLR's
constructor arguments (with the sources of their values), and the CLI instantiates the class
its ``_target_`` names with them. So that a key cannot drift from the code, the schema each
YAML file is validated against is generated from the constructor's signature (every
class of the method's chain, subclass defaults first): a new argument is a new key, a
removed one an unknown key. The arguments that come from other config groups
(:data:`FROM_OTHER_GROUPS`) are not in it; ``name`` (the option's name, used for run
folders) is the one key that is not an argument.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

from nbr_contrast.methods import (
    BYOL,
    CLIM,
    CO2,
    MSF,
    NNCLR,
    SNCLR,
    BaseMethod,
    CoNe,
    MoCoV2,
    MoCoV3,
    Supervised,
)

METHODS: dict[str, type[BaseMethod]] = {
    "nnclr": NNCLR,
    "co2": CO2,
    "mocov2": MoCoV2,
    "snclr": SNCLR,
    "mocov3": MoCoV3,
    "clim": CLIM,
    "cone": CoNe,
    "supervised": Supervised,
    "msf": MSF,
    "byol": BYOL,
}
"""Each ``method=<name>`` choice and the LightningModule class it builds."""


def neighbour_method(name: str) -> str | None:
    """The ``method=`` option a baseline switches the neighbours off in, else ``None``."""
    cls = METHODS.get(name)
    if cls is None or not getattr(cls, "fixed", None):
        return None
    return next(option for option, klass in METHODS.items() if klass is cls.__mro__[1])


FROM_OTHER_GROUPS = (
    "backbone",
    "optim",
    "num_classes",
    "channels_last",
    "finite_check_every_n_steps",
)
"""Constructor arguments the CLI fills from other groups (``backbone``, ``optim``,
``data.num_classes``, ``trainer.channels_last``, ``trainer.finite_check_every_n_steps``)."""


def constructor_parameters(cls: type[BaseMethod]) -> dict[str, tuple[Any, Any]]:
    """Every keyword argument of ``cls`` (its own and its bases'): ``name → (type, default)``.

    A subclass's default wins over its base's; a baseline's ``fixed`` arguments take their
    fixed value.
    """
    found: dict[str, tuple[Any, Any]] = {}
    for klass in cls.__mro__:
        if not (isinstance(klass, type) and issubclass(klass, BaseMethod)):
            continue
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        hints = typing.get_type_hints(init)
        for param in inspect.signature(init).parameters.values():
            if param.kind is not inspect.Parameter.KEYWORD_ONLY or param.name in found:
                continue
            found[param.name] = (hints.get(param.name, Any), param.default)
    for name, value in getattr(cls, "fixed", {}).items():
        found[name] = (found[name][0], value)
    return found


def method_schema(name: str, cls: type[BaseMethod]) -> type:
    """The dataclass ``conf/method/<name>.yaml`` is validated against.

    Its fields: ``_target_`` (``cls``'s dotted path), ``name`` and every constructor
    argument of ``cls`` but :data:`FROM_OTHER_GROUPS`, with the constructor's defaults.
    """
    fields: list[tuple[str, Any, Any]] = [
        ("_target_", str, dataclasses.field(default=f"{cls.__module__}.{cls.__qualname__}")),
        ("name", str, dataclasses.field(default=name)),
    ]
    for arg, (kind, default) in constructor_parameters(cls).items():
        if arg not in FROM_OTHER_GROUPS:
            fields.append((arg, kind, dataclasses.field(default=default)))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields)


METHOD_SCHEMAS: dict[str, type] = {name: method_schema(name, cls) for name, cls in METHODS.items()}
"""The schema of every ``method=<name>`` choice."""
