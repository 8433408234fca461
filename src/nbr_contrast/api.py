"""Notebook API: the same code path as the CLI, without a command line.

Example:
    >>> from nbr_contrast import api
    >>> cfg = api.compose(["method=nnclr", "trainer.max_epochs=2"], output_dir="runs/demo")
    >>> summary = api.fit(cfg)
    >>> api.evaluate(summary["checkpoint"], "knn")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from nbr_contrast import tasks
from nbr_contrast.cli import CONF_DIR, check_overrides
from nbr_contrast.config import register_configs
from nbr_contrast.methods.base import BaseMethod


def compose(overrides: list[str] | None = None, output_dir: str | Path | None = None) -> DictConfig:
    """Compose and validate a run config exactly as ``python -m nbr_contrast`` would.

    Args:
        overrides: Command-line style overrides, e.g. ``["method=nnclr", "optim.lr=0.3"]``.
        output_dir: Run folder (default ``outputs/<method>/<timestamp>``).

    Returns:
        The composed config.
    """
    overrides = list(overrides or [])
    register_configs()
    check_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    cfg.output_dir = str(output_dir or Path("outputs") / str(cfg.method.name) / stamp)
    return cfg


def fit(cfg: DictConfig) -> dict[str, Any]:
    """Pretrain; returns the run summary (kNN before/after, probe accuracy, paths)."""
    return tasks.fit(cfg)


def evaluate(
    ckpt: str | Path,
    kind: str = "knn",
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint with ``kind`` = ``knn``, ``linear`` or ``export``."""
    cfg = compose([f"task={kind}", *(overrides or [])], output_dir=output_dir)
    cfg.ckpt = str(ckpt)
    return tasks.run_task(cfg)


def load(ckpt: str | Path) -> BaseMethod:
    """Load a trained method from a checkpoint."""
    return tasks.load_method(ckpt)
