"""Figures for inspecting a representation: retrieved neighbours, curves, embedding map.

Figures are drawn on matplotlib ``Figure`` objects with an Agg canvas, without pyplot, so
the global backend of an interactive session is left alone and nothing is ever shown.
Each function saves a PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

DPI = 100
MATCH_COLOR = "tab:green"
MISMATCH_COLOR = "tab:red"
QUERY_COLOR = "tab:blue"
UNKNOWN_COLOR = "tab:gray"
TSNE_MAX_POINTS = 5000
LEGEND_MAX_CLASSES = 20
EMBEDDING_METHODS = ("auto", "pca", "tsne")
GRID_TITLE_BAND = 0.45


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches drawn off-screen (no display needed)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as a PNG at its exact figure size and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _to_hwc(image: Tensor) -> np.ndarray:
    """An image ``[3, H, W]`` (uint8 0..255 or float 0..1 / 0..255) as float HWC in 0..1."""
    img = image.detach().cpu().float()
    if image.dtype == torch.uint8 or img.max() > 1.0:
        img = img / 255.0
    return img.clamp(0.0, 1.0).permute(1, 2, 0).numpy()


def _show(ax: Axes, image: Tensor, title: str, frame: str) -> None:
    ax.imshow(_to_hwc(image))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8, color=frame, fontweight="bold")
    for spine in ax.spines.values():
        spine.set_edgecolor(frame)
        spine.set_linewidth(3)


def _name(class_names: Sequence[str], label: int) -> str:
    """The class name of ``label`` (``"unlabelled"`` for ``-1``)."""
    if label < 0:
        return "unlabelled"
    return class_names[label] if label < len(class_names) else str(label)


def plot_neighbour_grid(
    query_images: Tensor,
    query_labels: Tensor,
    neighbour_images: Tensor,
    neighbour_labels: Tensor,
    class_names: Sequence[str],
    path: str | Path,
    similarities: Tensor | None = None,
    title: str | None = None,
) -> Path:
    """One row per query: the query image, then its retrieved neighbours.

    Each neighbour is framed green when its label equals the query's and red otherwise,
    grey when either label is unknown (``-1``); its class name (and similarity to the
    query, when given) is its title.

    Args:
        query_images: Unnormalised images ``[Q, 3, H, W]`` (uint8, or float in 0..1 or
            0..255).
        query_labels: Labels ``[Q]``.
        neighbour_images: Retrieved images ``[Q, k, 3, H, W]``, nearest first.
        neighbour_labels: Labels ``[Q, k]``.
        class_names: Name of each class index.
        path: PNG destination.
        similarities: Similarity of each neighbour to its query ``[Q, k]``, shown after
            its class name.
        title: Figure title drawn above the grid (adds a band to the figure's height).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: If the shapes of the queries, neighbours and similarities disagree.
    """
    num_queries, k = neighbour_labels.shape[:2]
    if (
        query_images.shape[0] != num_queries
        or query_labels.shape[0] != num_queries
        or tuple(neighbour_images.shape[:2]) != (num_queries, k)
        or num_queries == 0
        or (similarities is not None and tuple(similarities.shape) != (num_queries, k))
    ):
        sim_shape = None if similarities is None else tuple(similarities.shape)
        raise ValueError(
            "Expected query_images [Q, 3, H, W], query_labels [Q], neighbour_images "
            f"[Q, k, 3, H, W], neighbour_labels [Q, k] and similarities [Q, k] or None with "
            f"Q >= 1; got {tuple(query_images.shape)}, {tuple(query_labels.shape)}, "
            f"{tuple(neighbour_images.shape)}, {tuple(neighbour_labels.shape)}, {sim_shape}."
        )
    band = GRID_TITLE_BAND if title else 0.0
    height = 1.45 * num_queries + band
    fig = new_figure(1.3 * (k + 1), height)
    axes = fig.subplots(num_queries, k + 1, squeeze=False)
    for row in range(num_queries):
        query_label = int(query_labels[row])
        _show(
            axes[row, 0],
            query_images[row],
            f"query: {_name(class_names, query_label)}",
            QUERY_COLOR,
        )
        for col in range(k):
            label = int(neighbour_labels[row, col])
            frame = MATCH_COLOR if label == query_label else MISMATCH_COLOR
            text = _name(class_names, label)
            if min(label, query_label) < 0:
                frame, text = UNKNOWN_COLOR, "" if label < 0 else text
            if similarities is not None:
                text = f"{text} {float(similarities[row, col]):.2f}".strip()
            _show(axes[row, col + 1], neighbour_images[row, col], text, frame)
    top = 1.0 - (0.08 * 1.45 * num_queries + band) / height
    if title:
        fig.suptitle(title, fontsize=10, y=1.0 - 0.25 * band / height, va="top", wrap=True)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, wspace=0.12, hspace=0.35)
    return save_figure(fig, path)


def plot_purity(
    curves: Mapping[str, Mapping[int, float]], path: str | Path, chance: float | None = None
) -> Path:
    """Neighbour label purity against the number of neighbours ``k``, one line per model.

    Args:
        curves: ``{model name: {k: purity in percent}}``.
        path: PNG destination.
        chance: Purity of a random neighbour (percent), drawn as a dashed line.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: If ``curves`` is empty or a curve has no point.
    """
    if not curves or not all(curves.values()):
        raise ValueError("curves must map at least one model name to {k: purity} points.")
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    for name, points in curves.items():
        ks = sorted(points)
        ax.plot(ks, [points[k] for k in ks], marker="o", markersize=4, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("k (nearest training images)")
    ax.set_ylabel("same class as the query (%)")
    ax.set_title("Neighbour label purity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _project_2d(feats: Tensor, method: str) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``feats`` and the name of the method actually used."""
    x = feats.detach().cpu().float()
    if method == "auto":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            method = "pca"
        else:
            method = "tsne" if x.shape[0] <= TSNE_MAX_POINTS else "pca"
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as err:
            raise ImportError("method='tsne' needs scikit-learn: pip install scikit-learn") from err
        perplexity = min(30.0, (x.shape[0] - 1) / 3.0)
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0)
        return tsne.fit_transform(x.numpy()), "t-SNE"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _, _, v = torch.pca_lowrank(x, q=2, center=True)
    return ((x - x.mean(dim=0)) @ v[:, :2]).numpy(), "PCA"


def _class_colors(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct colours: qualitative palettes up to 20 classes, a colour ramp beyond."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.0, 1.0, n)]


def plot_embedding_map(
    feats: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    path: str | Path,
    method: str = "auto",
) -> Path:
    """A 2-D map of the features, one colour per class.

    Args:
        feats: Features ``[N, F]`` with ``N >= 3`` and ``F >= 2``.
        labels: Integer labels ``[N]``.
        class_names: Name of each class index (a legend is drawn for up to 20 classes).
        path: PNG destination.
        method: ``"tsne"`` (scikit-learn), ``"pca"`` (``torch.pca_lowrank``) or ``"auto"``:
            t-SNE when scikit-learn is installed and ``N <= 5000``, PCA otherwise.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: For an unknown ``method`` or too few samples or dimensions.
        ImportError: For ``method="tsne"`` without scikit-learn.
    """
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(EMBEDDING_METHODS)}.")
    if feats.ndim != 2 or feats.shape[0] < 3 or feats.shape[1] < 2:
        raise ValueError(
            f"feats must be [N, F] with N >= 3 and F >= 2 to draw a 2-D map; got "
            f"{tuple(feats.shape)}."
        )
    coords, used = _project_2d(feats, method)
    y = labels.detach().cpu().long().numpy()
    classes = np.unique(y)
    fig = new_figure(8.0, 6.0)
    ax = fig.subplots()
    for c, color in zip(classes, _class_colors(len(classes)), strict=True):
        mask = y == c
        ax.scatter(coords[mask, 0], coords[mask, 1], s=6, color=color, label=_name(class_names, c))
    if len(classes) <= LEGEND_MAX_CLASSES:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2)
    ax.set_title(f"{used} of {feats.shape[0]} features")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)


def log_figure_to_tensorboard(
    logger_experiment: Any, tag: str, path: str | Path, step: int
) -> bool:
    """Log a saved PNG as an image if the experiment supports ``add_image``.

    Args:
        logger_experiment: E.g. ``TensorBoardLogger.experiment`` (a ``SummaryWriter``);
            anything without ``add_image`` is ignored.
        tag: Image tag.
        path: PNG file to log.
        step: Global step.

    Returns:
        Whether the image was logged.
    """
    add_image = getattr(logger_experiment, "add_image", None)
    if not callable(add_image):
        return False
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    add_image(tag, array, global_step=step, dataformats="HWC")
    return True
