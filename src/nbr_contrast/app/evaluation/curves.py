"""Per-epoch curves of a run's ``metrics.csv``: accuracies, losses and the neighbours.

``plots/curves.png`` of every fit: the accuracies in percent, the losses, and the neighbour
diagnostics (:mod:`nbr_contrast.monitors.neighbour_quality`) with the retrieved entries' age
on its own scale.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nbr_contrast.app.evaluation.plots import new_figure, save_figure


def _read_metrics(metrics_csv: Path) -> tuple[list[str], list[dict[str, str]]]:
    with Path(metrics_csv).open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _per_epoch(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    """Mean of the non-empty values of ``key`` per epoch, sorted by epoch."""
    values: defaultdict[float, list[float]] = defaultdict(list)
    for row in rows:
        cell, epoch = row.get(key) or "", row.get("epoch") or ""
        if not cell.strip() or not epoch.strip():
            continue
        try:
            values[float(epoch)].append(float(cell))
        except ValueError:
            continue
    epochs = sorted(values)
    return epochs, [float(np.mean(values[e])) for e in epochs]


FRACTION_PREFIX = "train/"
"""The prefix of accuracies logged as fractions from 0 to 1, the methods' per-batch means
(``acc1``, ``teacher_acc1``). The others (``val/knn_acc``,
``val/probe_acc1``, ``val/acc1``, ...) are logged in percent."""


def _draw_panel(
    ax: Axes, curves: dict[str, tuple[list[float], list[float]]], title: str, ylabel: str
) -> None:
    for key, (epochs, values) in curves.items():
        ax.plot(epochs, values, marker="o", markersize=3, label=key)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if curves:
        _legend_below(ax, *ax.get_legend_handles_labels())
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, f"no {title} metrics", ha="center", va="center", transform=ax.transAxes)


def _legend_below(ax: Axes, handles: list[Any], labels: list[str]) -> None:
    """One legend under the axes, so that no key covers a curve."""
    ax.legend(
        handles,
        labels,
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=3,
        frameon=False,
    )


NEIGHBOUR_PREFIX = "train/nbr/"
"""The neighbour diagnostics' keys (:mod:`nbr_contrast.monitors.neighbour_quality`)."""
NEIGHBOUR_SHARES = ("agreement", "self_retrieval", "top1_sim", "positive_sim", "spread")
"""The diagnostics drawn on the neighbours axes' left scale (0 to 1); ``age_mean`` and
``age_max`` go on its right scale (steps)."""


def _draw_neighbours(ax: Axes, rows: list[dict[str, str]], columns: list[str]) -> None:
    """Agreement, self-retrieval, similarities and spread (left), ages in steps (right)."""
    drawn = 0
    for name in NEIGHBOUR_SHARES:
        key = f"{NEIGHBOUR_PREFIX}{name}_epoch"
        epochs, values = _per_epoch(rows, key) if key in columns else ([], [])
        if epochs:
            ax.plot(epochs, values, marker="o", markersize=3, label=name)
            drawn += 1
    ax.set_title("neighbours")
    ax.set_xlabel("epoch")
    ax.set_ylabel("share / cosine")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = ax.get_legend_handles_labels()
    epochs, ages = _per_epoch(rows, f"{NEIGHBOUR_PREFIX}age_mean_epoch")
    if epochs:
        twin = ax.twinx()
        twin.plot(epochs, ages, "k--", marker="s", markersize=3, label="age_mean (steps)")
        twin.set_ylabel("age (steps)")
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
        drawn += 1
    if drawn:
        _legend_below(ax, handles, labels)
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, "no neighbour metrics", ha="center", va="center", transform=ax.transAxes)


def curves_figure(metrics_csv: str | Path, keys: Sequence[str] | None = None) -> Figure:
    """Per-epoch curves from a Lightning ``CSVLogger`` ``metrics.csv``, as a figure.

    Values logged several times in an epoch (step-level metrics) are averaged per epoch.
    The first axes hold every accuracy in percent (those logged as fractions, under
    :data:`FRACTION_PREFIX`, are multiplied by 100), the second the losses, the third the
    neighbour diagnostics (:data:`NEIGHBOUR_PREFIX`: shares and similarities, and the
    retrieved entries' mean age in steps on its right scale).

    Args:
        metrics_csv: The CSV file (columns ``epoch``, ``step`` and one per metric, with
            empty cells where a metric was not logged).
        keys: Metrics to draw; keys absent from the file are skipped. Keys containing
            ``"loss"`` go to the loss axes, the others to the accuracy axes. By default,
            every column whose name contains ``"acc"`` or ``"loss"``.

    Returns:
        The figure, its axes ``[accuracy, loss, neighbours]`` (and the age scale), one line
        per metric labelled by its key.

    Raises:
        ValueError: If the file has no ``epoch`` column or no selected metric has a value.
    """
    columns, rows = _read_metrics(Path(metrics_csv))
    if "epoch" not in columns:
        raise ValueError(f"{metrics_csv} has no 'epoch' column; expected a CSVLogger metrics.csv.")
    if keys is None:
        keys = [
            c for c in columns if ("acc" in c or "loss" in c) and not c.startswith(NEIGHBOUR_PREFIX)
        ]
    acc: dict[str, tuple[list[float], list[float]]] = {}
    loss: dict[str, tuple[list[float], list[float]]] = {}
    for key in keys:
        if key not in columns:
            continue
        epochs, values = _per_epoch(rows, key)
        if not epochs:
            continue
        if "loss" in key:
            loss[key] = (epochs, values)
        else:
            scale = 100.0 if key.startswith(FRACTION_PREFIX) else 1.0
            acc[key] = (epochs, [v * scale for v in values])
    if not acc and not loss:
        raise ValueError(
            f"{metrics_csv} has no usable metric among {list(keys)}; the columns are {columns}."
        )
    fig = new_figure(16.0, 5.0)
    acc_ax, loss_ax, nbr_ax = fig.subplots(1, 3, sharex=True)
    _draw_panel(acc_ax, acc, "accuracy", "accuracy (%)")
    _draw_panel(loss_ax, loss, "loss", "loss")
    _draw_neighbours(nbr_ax, rows, columns)
    fig.tight_layout()
    return fig


def plot_curves(
    metrics_csv: str | Path, path: str | Path, keys: Sequence[str] | None = None
) -> Path:
    """Save :func:`curves_figure` of ``metrics_csv`` and ``keys`` as the PNG ``path``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: As :func:`curves_figure` does.
    """
    return save_figure(curves_figure(metrics_csv, keys), path)
