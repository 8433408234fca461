"""``python -m nbr_contrast``: the Hydra application.

Overrides are checked against the structured configs and the config groups *before* Hydra
composes them, so a misspelt key or group option fails at once with the valid choices and
the closest match.

Exit codes: 0 done; 2 a setting cannot work (one ``Error:`` line on stderr naming the
setting and the fix, no traceback); 1 the loss became NaN/inf (one ``Error:`` line; a
diagnostic checkpoint is saved) or a bug (full traceback); 128 + signal number when
SIGTERM/SIGINT stopped the run after saving ``last.ckpt``. ``HYDRA_FULL_ERROR=1`` shows
the traceback for every error.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

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
        OverrideError: With the valid keys (or the group's options) and the closest match.
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
        key, value = a.split("=", 1)
        parts = key.split(".")
        if len(parts) == 1 and (CONF_DIR / key).is_dir():
            _check_group_option(key, value)
        if parts[0] not in top:
            raise OverrideError(_unknown(key, parts[0], sorted(top), "the run config"))
        if len(parts) < 2 or parts[0] not in schemas:
            continue
        fields = {k for k in _schema_fields(schemas[parts[0]]) if not k.startswith("_")}
        if parts[1] not in fields:
            raise OverrideError(_unknown(key, parts[1], sorted(fields), f"'{parts[0]}'"))


def _check_group_option(group: str, value: str) -> None:
    """Fail on ``group=option`` when ``conf/<group>/<option>.yaml`` does not exist."""
    if any(ch in value for ch in "()[]{}$") or value == "null":
        return  # sweep functions and interpolations are Hydra's to resolve
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    for option in value.split(","):
        if option not in options:
            close = difflib.get_close_matches(option, options, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise OverrideError(
                f"{group}={option} is not an option of '{group}'.{hint} "
                f"Available: {', '.join(options)}."
            )


def _unknown(key: str, name: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Unknown key '{key}'.{hint} Valid keys in {where}: {', '.join(valid)}."


def _fail(error: BaseException, code: int) -> NoReturn:
    """Print ``Error: <message>`` and exit (re-raise under ``HYDRA_FULL_ERROR=1``)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"Error: {error}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from nbr_contrast.methods.base import NonFiniteLossError
    from nbr_contrast.reliability import RunInterrupted, is_user_error, resume_command
    from nbr_contrast.tasks import run_task

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    cfg.output_dir = HydraConfig.get().runtime.output_dir
    try:
        result = run_task(cfg)
    except RunInterrupted as stop:
        print(f"{stop} Resume with:\n  {resume_command(cfg)}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except NonFiniteLossError as err:
        _fail(err, 1)
    except Exception as err:
        if not is_user_error(err):
            raise
        _fail(err, 2)
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
