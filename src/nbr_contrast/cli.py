"""``python -m nbr_contrast``: the Hydra application.

Overrides are checked against the structured configs *before* Hydra composes them, so a
misspelt key fails at once with the valid keys and the closest match; unknown group
options are reported by Hydra with the list of available options.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import nbr_contrast.config as c
from nbr_contrast.config import RunConfig, register_configs

CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUP_DEFAULTS = {"method": "nnclr"}


class OverrideError(ValueError):
    """An override names a key that no config schema has."""


def _schema_fields(schema: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _schemas(method: str) -> dict[str, type]:
    from nbr_contrast.methods import METHOD_CONFIGS

    schemas: dict[str, type] = {
        "backbone": c.BackboneConfig,
        "data": c.DataConfig,
        "trainer": c.TrainerConfig,
        "optim": c.OptimConfig,
        "index": c.IndexConfig,
        "logger": c.LoggerConfig,
        "task": c.TaskConfig,
    }
    if method in METHOD_CONFIGS:
        schemas["method"] = METHOD_CONFIGS[method]
    return schemas


def check_overrides(args: Sequence[str]) -> None:
    """Fail fast on ``group.key=value`` overrides whose key no schema has.

    Args:
        args: Command-line arguments (Hydra's own flags and ``+``/``~`` overrides pass).

    Raises:
        OverrideError: With the valid keys of that group and the closest match.
    """
    overrides = [a for a in args if "=" in a and not a.startswith(("-", "+", "~", "hydra"))]
    groups = dict(GROUP_DEFAULTS)
    for a in overrides:
        key, value = a.split("=", 1)
        if "." not in key:
            groups[key] = value.split(",")[0]
    schemas = _schemas(groups["method"])
    top = {f.name for f in dataclasses.fields(RunConfig)} | {"experiment"}
    for a in overrides:
        key = a.split("=", 1)[0]
        parts = key.split(".")
        if parts[0] not in top:
            raise OverrideError(_unknown(key, parts[0], sorted(top), "the run config"))
        if len(parts) < 2 or parts[0] not in schemas:
            continue
        fields = {k for k in _schema_fields(schemas[parts[0]]) if not k.startswith("_")}
        if parts[1] not in fields:
            raise OverrideError(_unknown(key, parts[1], sorted(fields), f"'{parts[0]}'"))


def _unknown(key: str, name: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Unknown key '{key}'.{hint} Valid keys in {where}: {', '.join(valid)}."


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from nbr_contrast.tasks import run_task

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    cfg.output_dir = HydraConfig.get().runtime.output_dir
    result = run_task(cfg)
    value = result.get(f"knn_acc_after@{cfg.method.knn_k}")
    return float(value) if isinstance(value, int | float) else None


def main() -> None:
    """Entry point of ``python -m nbr_contrast`` and the ``nbr-contrast`` script."""
    register_configs()
    try:
        check_overrides(sys.argv[1:])
    except OverrideError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()
