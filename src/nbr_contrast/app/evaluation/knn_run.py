"""The kNN reports of a run, computed by every rank: ``task=knn`` and a fit's before/after.

Each rank embeds its contiguous share of the labelled bank images (whole
:data:`~nbr_contrast.monitors.knn.KEY_BLOCK` blocks) and of the test images, without
padding or duplicates, and the classifier runs sharded
(:mod:`nbr_contrast.app.evaluation.knn_dist`); one process embeds and searches everything.
Inside a fit the ranks form the trainer's process group: the "before" accuracy is taken
when the fit starts (:class:`FitKnn` is a callback), the "after" accuracy once it returns.
``task=knn`` joins the group of a ``torchrun`` launch
(:func:`launched_group`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader

from nbr_contrast.app.evaluation.knn_dist import sharded_knn_accuracies
from nbr_contrast.app.evaluation.report import SplitFeatures
from nbr_contrast.data.datamodule import ViewsDataModule
from nbr_contrast.monitors.features import extract_features
from nbr_contrast.monitors.knn import KEY_BLOCK
from nbr_contrast.neighbours.search import SearchBackend, search_backend
from nbr_contrast.utils.dist import rank, world_size

Pair = tuple[SplitFeatures, SplitFeatures]
"""``(bank, queries)``: the labelled features a kNN report compares."""


def rank_share(positions: Sequence[int], block: int = 1) -> Sequence[int]:
    """This rank's contiguous share of ``positions`` in whole blocks (all on one process)."""
    blocks = -(-len(positions) // block)
    first = rank() * blocks // world_size() * block
    return positions[first : (rank() + 1) * blocks // world_size() * block]


def shard_loader(loader: DataLoader[Any], positions: Sequence[int]) -> DataLoader[Any]:
    """``loader``'s dataset at ``positions``, in that order, with the loader's settings."""
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=positions,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )


def knn_shards(
    backbone: nn.Module, datamodule: ViewsDataModule, device: torch.device, progress: bool = True
) -> Pair | None:
    """This rank's share of the normalised ``(bank, queries)`` features of a kNN report.

    The bank is the labelled training images when there are any, else the labelled
    reference images; each rank embeds whole :data:`~nbr_contrast.monitors.knn.KEY_BLOCK`
    blocks of it. The queries are the test images. ``None`` when nothing labelled can be
    evaluated (:attr:`ViewsDataModule.monitored`).
    """
    if not datamodule.monitored:
        return None
    datamodule.setup("fit")
    test, reference = datamodule.test_source, datamodule.reference_source
    assert test is not None
    if datamodule.labelled or reference is None:
        source, loader = datamodule.train_source, datamodule.index_dataloader()
    else:
        source, loader = reference, datamodule.eval_loader(reference)
    labelled = np.flatnonzero(np.asarray(source.labels) >= 0).tolist()
    backbone = backbone.to(device)
    show = progress and rank() == 0

    def embed(images: DataLoader[Any], positions: Sequence[int]) -> SplitFeatures:
        share = shard_loader(images, positions)
        return SplitFeatures(*extract_features(backbone, share, device, True, None, show))

    bank = embed(loader, rank_share(labelled, KEY_BLOCK))
    return bank, embed(datamodule.eval_loader(test), rank_share(range(len(test))))


def knn_backend(search: Any, device: torch.device) -> SearchBackend:
    """The float32 search backend of the kNN report, scoring :data:`KEY_BLOCK` keys at once.

    ``search.backend=faiss`` is honoured; ``auto`` means torch here, whose block-wise matmul
    gives bitwise the same similarities on any number of ranks (FAISS tiles its own way).
    """
    name = "faiss" if str(search.backend) == "faiss" else "torch"
    return search_backend(name, device, chunk_size=KEY_BLOCK)


def pair_accuracies(
    pair: Pair,
    ks: Sequence[int],
    temperatures: Sequence[float],
    classes: int,
    backend: SearchBackend | None = None,
    device: torch.device | str = "cpu",
) -> dict[float, dict[int, float]]:
    """The kNN accuracy (percent) per temperature and ``k``; call on every rank.

    Training features without a label (``-1``) are left out of the bank, which is moved to
    ``device`` (each rank holds only its block).
    """
    train, test = pair
    known = train.labels >= 0
    bank = (train.feats[known].to(device), train.labels[known], train.indices[known])
    queries = (test.feats, test.labels, test.indices)
    return sharded_knn_accuracies(bank, queries, ks, temperatures, classes, backend)


def spawned(trainer: L.Trainer) -> bool:
    """Whether the trainer runs the fit in processes it spawns (``ddp_spawn``)."""
    return isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)


class FitKnn(L.Callback):
    """kNN accuracy at ``method.knn_k`` and ``method.knn_temperature`` before and after a fit.

    "Before" is taken in :meth:`on_fit_start`, when every rank has joined the process
    group; under ``ddp_spawn`` (whose ranks cannot hand a value back) it is taken by the
    launching process before the fit (:meth:`take_before`).

    Args:
        datamodule: The run's data.
        k: Neighbours.
        temperature: Vote temperature.
        search: The ``search`` config (its backend searches).
        progress: Show progress bars (on rank 0).
        before: Take the "before" accuracy.
    """

    def __init__(
        self,
        datamodule: ViewsDataModule,
        k: int,
        temperature: float,
        search: Any,
        progress: bool,
        before: bool,
    ) -> None:
        self.datamodule, self.k, self.temperature = datamodule, k, temperature
        self.search, self.progress, self.want_before = search, progress, before
        self.before: float | None = None

    def measure(
        self, backbone: nn.Module, device: torch.device
    ) -> tuple[float | None, Pair | None]:
        """The accuracy of ``backbone``'s features (``None`` without labelled data) and them."""
        pair = knn_shards(backbone, self.datamodule, device, self.progress)
        if pair is None:
            return None, None
        backend = knn_backend(self.search, device)
        accs = pair_accuracies(
            pair, [self.k], [self.temperature], self.datamodule.num_classes, backend, device
        )
        return accs[self.temperature][self.k], pair

    def take_before(self, backbone: nn.Module, device: torch.device) -> None:
        """Take the "before" accuracy now, if it is wanted and not taken yet."""
        if self.want_before:
            self.want_before = False
            self.before = self.measure(backbone, device)[0]

    def state_dict(self) -> dict[str, Any]:
        """The "before" accuracy, saved in checkpoints so a resumed fit still reports it."""
        return {"before": self.before}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the "before" accuracy of the fit this checkpoint continues."""
        self.before = state_dict.get("before", self.before)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Take the "before" accuracy on every rank of the fit."""
        self.take_before(pl_module.backbone, pl_module.device)  # type: ignore[arg-type]

    def after(self, backbone: nn.Module, device: torch.device) -> tuple[float | None, Pair | None]:
        """The "after" accuracy, and the ``(train, test)`` features when they are the whole split.

        The features are the whole split on one process when every training image has a
        label (the bank is then the training set); the plots of a fit reuse them.
        """
        acc, pair = self.measure(backbone, device)
        whole = world_size() == 1 and self.datamodule.num_unlabelled == 0
        return acc, pair if whole else None


def attach_fit_knn(
    cfg: Any,
    trainer: L.Trainer,
    datamodule: ViewsDataModule,
    backbone: nn.Module,
    device: torch.device,
    before: bool,
) -> FitKnn:
    """A :class:`FitKnn` for ``cfg``'s run added to ``trainer`` ("before" taken now on spawn).

    Args:
        cfg: The run config.
        trainer: The fit's trainer.
        datamodule: The run's data.
        backbone: The method's backbone.
        device: Evaluation device of the launching process.
        before: Take the "before" accuracy.
    """
    report = FitKnn(
        datamodule,
        int(cfg.method.knn_k),
        float(cfg.method.knn_temperature),
        cfg.search,
        bool(cfg.trainer.enable_progress_bar),
        before,
    )
    if spawned(trainer):
        report.take_before(backbone, device)
    trainer.callbacks.append(report)  # type: ignore[attr-defined]
    return report


@contextmanager
def launched_group(device: torch.device) -> Iterator[None]:
    """Join the process group of a ``torchrun`` launch of several ranks for the block.

    Nothing happens when a group exists already or the process was not started by
    ``torchrun`` (a ``WORLD_SIZE`` that a trainer's launcher left behind does not count).
    """
    env = os.environ
    torchrun = env.get("TORCHELASTIC_RUN_ID", "none") != "none"
    started = torchrun and not dist.is_initialized() and int(env.get("WORLD_SIZE", "1")) > 1
    if started:
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()


def accuracy_table(accs: dict[float, dict[int, float]]) -> Table:
    """The printed ``task=knn`` table: one row per ``k``, one column per temperature."""
    table = Table(title="kNN evaluation", title_justify="left")
    table.add_column("k", style="bold cyan")
    for t in accs:
        table.add_column(f"τ={t:g}", justify="right")
    for k in next(iter(accs.values())):
        table.add_row(str(k), *(f"{accs[t][k]:.2f}%" for t in accs))
    return table
