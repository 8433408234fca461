"""What a task leaves at its end: JSON files in the run folder and the printed summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table


def neighbour_summary(metrics: dict[str, float]) -> dict[str, float]:
    """The last epoch's neighbour diagnostics (``train/nbr/*``), by name."""
    prefix, suffix = "train/nbr/", "_epoch"
    return {
        key[len(prefix) : -len(suffix)]: value
        for key, value in sorted(metrics.items())
        if key.startswith(prefix) and key.endswith(suffix)
    }


def write_json(cfg: DictConfig, name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` as ``<run folder>/<name>`` and return its path."""
    out = Path(cfg.output_dir) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    return out


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    """Print a two-column summary table (names, values) under ``title``."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
