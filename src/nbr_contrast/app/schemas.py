"""Where Hydra finds the run config: the YAML tree in ``conf/`` and the structured schemas.

:func:`register_configs` puts every schema of :mod:`nbr_contrast.app.config` and every
method schema of :data:`nbr_contrast.app.method_schemas.METHOD_SCHEMAS` in Hydra's
ConfigStore. It sits above both, so neither the configs nor the methods import it.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore

from nbr_contrast.app.config import (
    BackboneConfig,
    DataConfig,
    LoggerConfig,
    OptimConfig,
    RunConfig,
    SearchConfig,
    TaskConfig,
    TrainerConfig,
)
from nbr_contrast.app.method_schemas import METHOD_SCHEMAS

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
"""The Hydra config folder: one sub-folder per config group, ``config.yaml`` at the top."""


def register_configs() -> None:
    """Register every schema with Hydra's ConfigStore (idempotent).

    Schemas live in their own ``schema/<group>`` groups, so ``--help`` and Hydra's
    "available options" lists show only the real choices; each YAML file in ``conf/``
    starts from its schema with ``- /schema/<group>@_here_: <name>``.
    """
    cs = ConfigStore.instance()
    cs.store(group="schema", name="run", node=RunConfig)
    cs.store(group="schema/backbone", name="backbone", node=BackboneConfig)
    cs.store(group="schema/data", name="data", node=DataConfig)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)
    cs.store(group="schema/optim", name="optim", node=OptimConfig)
    cs.store(group="schema/search", name="search", node=SearchConfig)
    cs.store(group="schema/logger", name="logger", node=LoggerConfig)
    cs.store(group="schema/task", name="task", node=TaskConfig)
    for name, schema in METHOD_SCHEMAS.items():
        cs.store(group="schema/method", name=name, node=schema)
