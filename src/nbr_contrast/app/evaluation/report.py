"""End-of-run pictures: neighbour grid, curves and embedding map, saved and logged.

They reuse the un-augmented features the final kNN evaluation already computed, so a
run's report costs no extra pass over the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import ImageOps
from torch import Tensor

from nbr_contrast.app.evaluation.curves import plot_curves
from nbr_contrast.app.evaluation.plots import (
    log_figure_to_tensorboard,
    plot_embedding_map,
    plot_neighbour_grid,
)
from nbr_contrast.data.image_source import ImageSource

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
    """Raw images ``[N, 3, H, W]`` uint8 of ``source`` at ``indices`` (for display).

    Images of other sizes than the first are centre-cropped and resized to its size.
    """
    images = [source.get_image(int(i)).convert("RGB") for i in indices.flatten()]
    size = images[0].size
    arrays = [np.asarray(img if img.size == size else ImageOps.fit(img, size)) for img in images]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return images.reshape(*indices.shape, *images.shape[1:])


@dataclass
class NearestImages:
    """The nearest training images of some test queries, nearest first.

    Attributes:
        queries: Rows of the queries in the test features ``[Q]``.
        query_indices: Dataset indices of the queries in the test source ``[Q]``.
        query_labels: Labels of the queries ``[Q]``.
        indices: Dataset indices of the neighbours in the train source ``[Q, k]``.
        labels: Labels of the neighbours ``[Q, k]``.
        similarities: Cosine similarities of query and neighbour ``[Q, k]``, decreasing.
    """

    queries: Tensor
    query_indices: Tensor
    query_labels: Tensor
    indices: Tensor
    labels: Tensor
    similarities: Tensor

    @property
    def matches(self) -> Tensor:
        """Whether each neighbour has its query's label ``[Q, k]``."""
        return self.labels == self.query_labels[:, None]


def nearest_neighbours(
    train: SplitFeatures, test: SplitFeatures, queries: Sequence[int] | Tensor, k: int
) -> NearestImages:
    """The ``k`` most cosine-similar training features of the test rows ``queries``.

    Args:
        train: Normalised training features (the search base).
        test: Normalised test features.
        queries: Rows of ``test`` to search for.
        k: Neighbours per query (at most the number of training features).

    Returns:
        The neighbours, nearest first.

    Raises:
        ValueError: If ``k`` is not in ``[1, N]`` or a query row is out of range.
    """
    rows = torch.as_tensor(queries, dtype=torch.long).flatten()
    if not 1 <= k <= len(train.labels):
        raise ValueError(f"k={k} must be between 1 and the {len(train.labels)} training images.")
    if len(rows) and not bool(((rows >= 0) & (rows < len(test.labels))).all()):
        raise ValueError(f"queries must be rows of the {len(test.labels)} test features.")
    sims, nbr = (test.feats[rows] @ train.feats.T).topk(k, dim=1)
    return NearestImages(
        queries=rows,
        query_indices=test.indices[rows],
        query_labels=test.labels[rows],
        indices=train.indices[nbr],
        labels=train.labels[nbr],
        similarities=sims,
    )


def neighbour_purity(
    train: SplitFeatures, test: SplitFeatures, ks: Sequence[int], chunk_size: int = 1024
) -> dict[int, float]:
    """Share (percent) of the ``k`` nearest training images that have the query's label.

    Averaged over every test image; one search for ``max(ks)`` serves every ``k``.

    Args:
        train: Normalised training features.
        test: Normalised test features.
        ks: Neighbour counts (each in ``[1, N]``).
        chunk_size: Test rows searched at once.

    Returns:
        ``{k: purity in percent}`` in the order of ``ks``.

    Raises:
        ValueError: If ``ks`` is empty or a ``k`` is out of range.
    """
    if not ks:
        raise ValueError("ks is empty; pass at least one number of neighbours k.")
    if min(ks) < 1:
        raise ValueError(f"ks={list(ks)} must all be at least 1.")
    top = max(ks)
    hits = torch.zeros(top)
    for start in range(0, len(test.labels), chunk_size):
        rows = torch.arange(start, min(start + chunk_size, len(test.labels)))
        nb = nearest_neighbours(train, test, rows, top)
        hits += nb.matches.float().sum(dim=0)
    cumulative = hits.cumsum(0) / max(len(test.labels), 1)
    return {k: 100.0 * float(cumulative[k - 1]) / k for k in ks}


def grid_queries(test: SplitFeatures, count: int = GRID_QUERIES, seed: int = 0) -> Tensor:
    """Rows of ``count`` random test images, one per class while classes last.

    Images without a label (``-1``) each count as a class of their own.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(test.labels), generator=generator)
    picked: list[int] = []
    seen: set[int] = set()
    for i in order.tolist():
        label = int(test.labels[i])
        if label < 0 or label not in seen:
            picked.append(i)
            seen.add(label)
        if len(picked) == count:
            break
    return torch.tensor(picked, dtype=torch.long)


def without_self(neighbours: NearestImages) -> NearestImages:
    """``neighbours`` of training queries in the training set minus the first (itself)."""
    return NearestImages(
        neighbours.queries,
        neighbours.query_indices,
        neighbours.query_labels,
        neighbours.indices[:, 1:],
        neighbours.labels[:, 1:],
        neighbours.similarities[:, 1:],
    )


def neighbour_grid(
    train: SplitFeatures,
    test: SplitFeatures | None,
    train_source: ImageSource,
    test_source: ImageSource | None,
    path: Path,
    seed: int = 0,
    queries: Sequence[int] | Tensor | None = None,
    k: int = GRID_NEIGHBOURS,
    title: str | None = None,
) -> Path:
    """Grid of test queries and their nearest training images, with similarities.

    Without test images (``test`` is ``None``) the queries are training images and their
    neighbours the other training images. Unlabelled images are framed grey.

    Args:
        train: Normalised training features.
        test: Normalised test features, or ``None``.
        train_source: Images of the training features' dataset indices.
        test_source: Images of the test features' dataset indices, or ``None``.
        path: PNG destination.
        seed: Seed of the query choice when ``queries`` is not given.
        queries: Rows of ``test`` to show (default: one random image per class, up to 8).
        k: Neighbours per query.
        title: Figure title (default: a description of the grid).

    Returns:
        ``path``.
    """
    if test is None or test_source is None:
        test, test_source = train, train_source
        k = min(k, len(train.labels) - 1)
        rows = grid_queries(test, GRID_QUERIES, seed) if queries is None else queries
        nb = without_self(nearest_neighbours(train, test, rows, k + 1))
    else:
        rows = grid_queries(test, GRID_QUERIES, seed) if queries is None else queries
        nb = nearest_neighbours(train, test, rows, k)
    known = (nb.labels >= 0) & (nb.query_labels[:, None] >= 0)
    purity = 100.0 * float(nb.matches[known].float().mean()) if bool(known.any()) else None
    default = (
        f"{k} nearest training images of each query by cosine similarity (unlabelled: grey)"
        if purity is None
        else f"{k} nearest training images of each test query by cosine similarity "
        f"(green: same class, red: other; {purity:.0f}% same class)"
    )
    return plot_neighbour_grid(
        source_images(test_source, nb.query_indices),
        nb.query_labels,
        source_images(train_source, nb.indices),
        nb.labels,
        train_source.classes,
        path,
        similarities=nb.similarities,
        title=default if title is None else title,
    )


def write_run_plots(
    output_dir: Path,
    trainer: L.Trainer,
    train: SplitFeatures,
    test: SplitFeatures | None,
    train_source: ImageSource,
    test_source: ImageSource | None,
) -> list[Path]:
    """Write the run's PNGs under ``output_dir/plots`` and log them to TensorBoard.

    Without test images the grid and the map show training images (uncoloured when they
    have no label).
    """
    folder = Path(output_dir) / "plots"
    shown, shown_source = (train, train_source) if test is None else (test, test_source)
    assert shown_source is not None
    paths = [
        neighbour_grid(train, test, train_source, test_source, folder / "neighbours.png"),
        plot_embedding_map(
            shown.feats[:MAP_POINTS],
            shown.labels[:MAP_POINTS],
            shown_source.classes,
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
