"""End-of-run pictures: neighbour grid, curves and embedding map, saved and logged.

They reuse the un-augmented features the final kNN evaluation already computed, so a
run's report costs no extra pass over the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor

from nbr_contrast.data.sources import ImageSource
from nbr_contrast.eval.plots import (
    log_figure_to_tensorboard,
    plot_curves,
    plot_embedding_map,
    plot_neighbour_grid,
)

GRID_QUERIES = 8
GRID_NEIGHBOURS = 8
MAP_POINTS = 2000


@dataclass
class SplitFeatures:
    """Normalised features, labels and dataset indices of one split."""

    feats: Tensor
    labels: Tensor
    indices: Tensor


def source_images(source: ImageSource, indices: Tensor) -> Tensor:
    """Raw images ``[N, 3, H, W]`` uint8 of ``source`` at ``indices`` (for display)."""
    arrays = [np.asarray(source.get_image(int(i)).convert("RGB")) for i in indices.flatten()]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return images.reshape(*indices.shape, *images.shape[1:])


def neighbour_grid(
    train: SplitFeatures,
    test: SplitFeatures,
    train_source: ImageSource,
    test_source: ImageSource,
    path: Path,
    seed: int = 0,
) -> Path:
    """Grid of test queries (one per class where possible) and their nearest train images."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(test.labels), generator=generator)
    picked: list[int] = []
    seen: set[int] = set()
    for i in order.tolist():
        label = int(test.labels[i])
        if label not in seen:
            picked.append(i)
            seen.add(label)
        if len(picked) == GRID_QUERIES:
            break
    rows = torch.tensor(picked)
    sims = test.feats[rows] @ train.feats.T
    nbr = sims.topk(GRID_NEIGHBOURS, dim=1).indices
    return plot_neighbour_grid(
        source_images(test_source, test.indices[rows]),
        test.labels[rows],
        source_images(train_source, train.indices[nbr]),
        train.labels[nbr],
        train_source.classes,
        path,
    )


def write_run_plots(
    output_dir: Path,
    trainer: L.Trainer,
    train: SplitFeatures,
    test: SplitFeatures,
    train_source: ImageSource,
    test_source: ImageSource,
) -> list[Path]:
    """Write the run's PNGs under ``output_dir/plots`` and log them to TensorBoard."""
    folder = Path(output_dir) / "plots"
    paths = [
        neighbour_grid(train, test, train_source, test_source, folder / "neighbours.png"),
        plot_embedding_map(
            test.feats[:MAP_POINTS],
            test.labels[:MAP_POINTS],
            test_source.classes,
            folder / "embedding_map.png",
        ),
    ]
    metrics = Path(output_dir) / "csv" / "metrics.csv"
    if metrics.is_file():
        paths.append(plot_curves(metrics, folder / "curves.png"))
    for logger in trainer.loggers:
        for p in paths:
            log_figure_to_tensorboard(logger.experiment, f"plots/{p.stem}", p, trainer.global_step)
    return paths
