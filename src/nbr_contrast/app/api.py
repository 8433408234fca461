"""Notebook API: the same code path as the CLI, without a command line.

Example:
    >>> from nbr_contrast import api
    >>> cfg = api.compose(["method=nnclr", "trainer.max_epochs=2"], output_dir="runs/demo")
    >>> summary = api.fit(cfg)
    >>> api.evaluate(summary["checkpoint"], "knn")

Exploring a representation:
    >>> method = api.load(summary["checkpoint"])
    >>> dm = api.datamodule(method)
    >>> train, test = api.features(method, dm)
    >>> api.neighbours(train, test, queries=[0, 1, 2], k=5).similarities
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nbr_contrast.app import tasks
from nbr_contrast.app.build import build_datamodule, build_method
from nbr_contrast.app.evaluation.report import (
    NearestImages,
    SplitFeatures,
    nearest_neighbours,
    neighbour_grid,
    neighbour_purity,
)
from nbr_contrast.app.overrides import check_overrides
from nbr_contrast.app.renames import upgrade_overrides
from nbr_contrast.app.schemas import CONF_DIR, register_configs
from nbr_contrast.data.datamodule import ViewsDataModule
from nbr_contrast.methods.base import BaseMethod


def compose(overrides: list[str] | None = None, output_dir: str | Path | None = None) -> DictConfig:
    """Compose and validate a run config exactly as ``python -m nbr_contrast`` would.

    Args:
        overrides: Command-line style overrides, e.g. ``["method=nnclr", "optim.lr=0.3"]``.
        output_dir: Run folder (default ``outputs/<method>/<timestamp>``).

    Returns:
        The composed config.
    """
    overrides, notes = upgrade_overrides(list(overrides or []))
    for note in notes:
        print(note)
    register_configs()
    check_overrides(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S.%f")
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
    """Evaluate a checkpoint with ``kind`` = ``knn``, ``linear``, ``finetune`` or ``export``.

    ``knn``, ``linear`` and ``finetune`` use the data the checkpoint was trained on, except
    what ``overrides`` set (``data=<option>``, ``data.<key>=...``). A ``linear`` or
    ``finetune`` run stopped by a signal continues with ``"resume=true"`` in ``overrides``
    and the same ``output_dir``.
    """
    command = [f"task={kind}", *(overrides or [])]
    cfg = compose(command, output_dir=output_dir)
    cfg.ckpt = str(ckpt)
    return tasks.run_task(cfg, overrides=command)


def load(ckpt: str | Path) -> BaseMethod:
    """Load a trained method from a checkpoint."""
    return tasks.load_method(ckpt)


def untrained(ckpt: str | Path, seed: int | None = None) -> BaseMethod:
    """The checkpoint's method and architecture with fresh random weights (a baseline).

    Args:
        ckpt: Checkpoint written by ``task=fit``.
        seed: Seed of the initialisation (default: the run's ``seed``).

    Returns:
        The untrained method.
    """
    cfg = load(ckpt).run_config
    L.seed_everything(int(cfg.seed if seed is None else seed), verbose=False)
    method = build_method(cfg)
    method.run_config = cfg
    return method


def datamodule(method: BaseMethod, overrides: list[str] | None = None) -> ViewsDataModule:
    """The data module of the run ``method`` was trained in, set up.

    Args:
        method: A method from :func:`load` or :func:`untrained`.
        overrides: Dot-list changes to the run config, e.g. ``["data.num_workers=0"]``.

    Returns:
        The data module (sources loaded).
    """
    cfg = OmegaConf.merge(method.run_config, OmegaConf.from_dotlist(list(overrides or [])))
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return dm


def features(
    method: BaseMethod, dm: ViewsDataModule, progress: bool = False
) -> tuple[SplitFeatures, SplitFeatures]:
    """Normalised backbone features of the un-augmented train and test images.

    Args:
        method: The model to embed with (on its run's evaluation device).
        dm: Its data module (:func:`datamodule`).
        progress: Show a progress bar.

    Returns:
        ``(train, test)`` features, labels and dataset indices, on the CPU.
    """
    return tasks.split_features(method, dm, tasks.eval_device(method.run_config), progress)


def neighbours(
    train: SplitFeatures, test: SplitFeatures, queries: Sequence[int] | Tensor, k: int
) -> NearestImages:
    """The ``k`` nearest training images of the test rows ``queries``, nearest first.

    Args:
        train: Training features from :func:`features`.
        test: Test features from :func:`features`.
        queries: Rows of ``test`` (positions in the test set) to search for.
        k: Neighbours per query.

    Returns:
        Dataset indices, labels and cosine similarities of the neighbours.
    """
    return nearest_neighbours(train, test, queries, k)


def knn(
    train: SplitFeatures, test: SplitFeatures, ks: Sequence[int], temperature: float = 0.1
) -> dict[int, float]:
    """Weighted cosine kNN accuracy (percent) of the test features, for every ``k`` in ``ks``.

    The same classifier as ``task=knn``, on features already extracted.
    """
    classes = int(max(train.labels.max(), test.labels.max())) + 1
    return tasks.knn_of(train, test, list(ks), temperature, classes)


def purity(train: SplitFeatures, test: SplitFeatures, ks: Sequence[int]) -> dict[int, float]:
    """Share (percent) of each test image's ``k`` nearest training images of its class."""
    return neighbour_purity(train, test, ks)


def grid(
    train: SplitFeatures,
    test: SplitFeatures,
    dm: ViewsDataModule,
    path: str | Path,
    queries: Sequence[int] | Tensor | None = None,
    k: int = 8,
    title: str | None = None,
) -> Path:
    """Save a PNG of test queries and their nearest training images (with similarities).

    Args:
        train: Training features from :func:`features`.
        test: Test features from :func:`features`.
        dm: The data module the features came from (for the images and class names).
        path: PNG destination.
        queries: Rows of ``test`` to show (default: one random image per class, up to 8).
        k: Neighbours per query.
        title: Figure title (default: a description with the share of same-class images).

    Returns:
        ``path``.
    """
    return neighbour_grid(
        train,
        test,
        dm.train_source,
        dm.test_source,
        Path(path),
        queries=queries,
        k=k,
        title=title,
    )
