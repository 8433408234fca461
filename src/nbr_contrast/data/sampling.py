"""Training order: seeded, sharded over ranks, and resumable mid-epoch.

:class:`ResumableSampler` yields ``(index, seed)`` keys for the per-sample datasets;
:class:`ResidentBatchSampler` yields whole batches of indices already on the device for
the :class:`~nbr_contrast.data.datasets.ResidentDataset`. Both derive everything from the run's
seed and the epoch, so an interrupted run resumes with the same order and augmentations.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from nbr_contrast.data.datasets import ResidentDataset


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The random seed of training item ``index`` in epoch ``epoch`` of a run seeded ``seed``."""
    return ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (2**63)


class ResumableSampler(DistributedSampler[int]):
    """Training order and augmentation seeds derived from ``seed + epoch`` alone.

    The order of epoch ``e`` is a fixed function of the seed and ``e`` (a seeded
    permutation, sharded over ranks as :class:`~torch.utils.data.DistributedSampler` does),
    so it does not depend on how many epochs this process has already iterated, and a
    resumed run visits the same images in the same order as an uninterrupted one. Each
    index comes with its item's seed (:func:`item_seed`) as ``(index, seed)``; the datasets
    draw that item's random augmentation (and served neighbour) from it, so loader workers,
    whose random state would otherwise carry over from epoch to epoch, give the same items
    in a resumed run too. Lightning
    calls :meth:`set_epoch` at every epoch start; :meth:`resume_at` makes the next iteration
    start after the batches an interrupted run had already consumed. Being a
    ``DistributedSampler``, Lightning uses it as is under DDP instead of wrapping it.

    Args:
        dataset: The training dataset (only its length is used).
        batch_size: Per-device batch size (to turn consumed batches into samples).
        seed: Seed of the order.
        num_replicas: Number of ranks.
        rank: This process's rank.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size = int(batch_size)
        self.skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s order; a pending mid-epoch start of another epoch is dropped."""
        if epoch != self.epoch:
            self.skip_batches = 0
        super().set_epoch(epoch)

    def resume_at(self, epoch: int, batches: int) -> None:
        """Make the next iteration be epoch ``epoch`` without its first ``batches`` batches."""
        super().set_epoch(epoch)
        self.skip_batches = int(batches)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())
        skip, self.skip_batches = self.skip_batches * self.batch_size, 0
        return iter([(i, item_seed(self.seed, self.epoch, i)) for i in indices[skip:]])


class ResidentBatchSampler(ResumableSampler):
    """Whole batches of dataset indices sliced on the device from one permutation per epoch.

    The permutation is :class:`ResumableSampler`'s (the same seeded order, padded and
    sharded over ranks the same way), made with one ``randperm`` per epoch and moved to the
    device once; each batch is a slice of it, yielded with its seed
    (:func:`item_seed` of the batch's first position), so the loader runs no Python per
    image. Incomplete last batches are dropped. Used with ``batch_size=None``. Takes
    :class:`ResumableSampler`'s arguments, with a
    :class:`~nbr_contrast.data.datasets.ResidentDataset` as ``dataset``.
    """

    @property
    def device(self) -> torch.device:
        """The resident dataset's device, where the batches of indices live."""
        assert isinstance(self.dataset, ResidentDataset)
        return self.dataset.device

    def __len__(self) -> int:
        return self.num_samples // self.batch_size

    def permutation(self) -> Tensor:
        """This rank's order of epoch ``self.epoch`` (as ``DistributedSampler`` shards it)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator)  # type: ignore[arg-type]
        padding = self.total_size - len(order)
        if padding > 0:
            order = torch.cat([order, order.repeat(math.ceil(padding / len(order)))[:padding]])
        return order[self.rank : self.total_size : self.num_replicas].to(self.device)

    def __iter__(self) -> Iterator[tuple[Tensor, int]]:  # type: ignore[override]
        order = self.permutation()
        skip, self.skip_batches = self.skip_batches, 0
        b = self.batch_size
        for i in range(skip, len(self)):
            yield order[i * b : (i + 1) * b], item_seed(self.seed, self.epoch, i * b)


def training_position(trainer: L.Trainer | None) -> dict[str, int]:
    """``{"epoch", "batches"}``: where the Trainer's next training batch is (empty: no trainer).

    ``batches`` counts the batches of ``epoch`` already drawn; after an epoch's last batch
    the position is the next epoch's start. A datamodule keeps it in its checkpoint state
    and hands it to :meth:`ResumableSampler.resume_at` on resume.
    """
    if trainer is None:
        return {}
    epoch = int(trainer.current_epoch)
    drawn = int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
    total = trainer.num_training_batches
    if math.isfinite(total) and drawn >= total:
        return {"epoch": epoch + 1, "batches": 0}
    return {"epoch": epoch, "batches": drawn}
