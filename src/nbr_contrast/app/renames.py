"""Settings renamed in 0.2: the old names keep working on the command line and in checkpoints.

Each idea has one name since 0.2: the search settings are the ``search`` group (``index``
was also the neighbour index, the dataset graph and a sample's position), and every
neighbour count of a method is ``k`` (SNCLR's ``num_neighbours``, CLIM's ``graph_k``). An
override with an old name is rewritten to the new one with one line saying so; a run config
stored in a checkpoint by 0.1 is read with the new names.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

RENAMED = {
    "index": "search",
    "method.num_neighbours": "method.k",
    "method.graph_k": "method.k",
}
"""Old setting (a group or a dotted key) → its name since 0.2."""

BIASED_PREDICTOR = ("snclr", "mocov3")
"""Methods whose predictor had a bias on its output layer before 0.2 (MoCo v3 has none)."""

PREFIXES = ("++", "+", "~")


def _renamed(key: str) -> str | None:
    """The new name of ``key`` (or of the group it is in), if it was renamed."""
    if key in RENAMED:
        return RENAMED[key]
    group, _, rest = key.partition(".")
    if rest and group in RENAMED and "." not in RENAMED[group]:
        return f"{RENAMED[group]}.{rest}"
    return None


def upgrade_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Command-line arguments with renamed settings under their new names.

    Returns:
        The arguments, and one line per rewritten one (``index=torch is now search=torch``).
    """
    upgraded, notes = [], []
    for arg in args:
        prefix = next((p for p in PREFIXES if arg.startswith(p)), "")
        key, sep, value = arg[len(prefix) :].partition("=")
        new = _renamed(key) if sep and not arg.startswith("-") else None
        if new is None:
            upgraded.append(arg)
            continue
        upgraded.append(f"{prefix}{new}={value}")
        notes.append(f"{key}={value} is now {new}={value} (renamed in nbr_contrast 0.2).")
    return upgraded, notes


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run config stored by nbr_contrast 0.1, with every renamed setting moved (a copy).

    An SNCLR or MoCo v3 run of 0.1 also gets ``predictor_bias: true``: its predictor's output
    layer had the bias that 0.2 leaves out, as MoCo v3 does.
    """
    config = copy.deepcopy(config)
    for old, new in RENAMED.items():
        if "." not in old:
            if old in config and new not in config:
                config[new] = config.pop(old)
            continue
        group, name = old.split(".")
        node = config.get(group)
        new_name = new.split(".")[1]
        if isinstance(node, dict) and name in node and new_name not in node:
            node[new_name] = node.pop(name)
    method = config.get("method")
    if isinstance(method, dict) and method.get("name") in BIASED_PREDICTOR:
        method.setdefault("predictor_bias", True)
    return config
