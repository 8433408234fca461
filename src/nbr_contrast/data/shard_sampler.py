"""Training order of WebDataset shards: whole shards per rank and loader worker, resumable.

The shards are dealt once to ``ranks × workers`` slots (shard ``j`` to slot
``j mod slots``, slot ``rank × workers + worker``). In epoch ``e`` a slot reads its shards
in an order seeded by the run's seed, ``e`` and the slot, each shard's samples in a seeded
order too, so a loader worker reads one shard at a time and no sample reaches two ranks or
workers. Every slot yields the same number of batches (the smallest slot's share, whole
batches): each epoch trains on every sample when the shards split evenly and each slot's
share is a multiple of ``data.batch_size``; otherwise each slot leaves the rest of its
share (another rest each epoch), said in one warning. The loader hands batch ``k`` of a
rank to worker ``k mod workers``, so this rank's order interleaves its workers' batches.

The order is a fixed function of the seed and the epoch, keyed like
:class:`~nbr_contrast.data.sampling.ResumableSampler`'s: a resumed run skips exactly the
batches the interrupted one had drawn and continues with the same samples and views.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Any

import torch
from torch.utils.data import Dataset

from nbr_contrast.data.image_source import DataSourceError, ImageSource
from nbr_contrast.data.sampling import ResumableSampler, item_seed
from nbr_contrast.data.shards import ShardSource


class ShardSampler(ResumableSampler):
    """Per-worker shard streams of one rank, as ``(index, seed)`` keys.

    Args:
        dataset: The training dataset (only its length is used).
        batch_size: Per-device batch size.
        seed: Seed of the order.
        num_replicas: Number of ranks.
        rank: This process's rank.
        counts: Samples per shard, in shard order (dataset indices count across shards).
        workers: Loader worker processes (``0``: the main process reads, one slot per rank).

    Raises:
        DataSourceError: If there are fewer shards than ``ranks × workers`` or a slot's
            share is smaller than one batch.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        seed: int,
        num_replicas: int,
        rank: int,
        counts: Sequence[int],
        workers: int,
    ) -> None:
        super().__init__(dataset, batch_size, seed, num_replicas, rank)
        self.workers = max(1, int(workers))
        slots = num_replicas * self.workers
        if len(counts) < slots:
            raise DataSourceError(
                f"data.shards: {len(counts)} shard(s) cannot feed {num_replicas} rank(s) × "
                f"{self.workers} loader worker(s), each reading whole shards; lower "
                f"data.num_workers or write at least {slots} shards."
            )
        starts = [0, *accumulate(int(n) for n in counts)]
        self.slots = [
            [(starts[j], int(counts[j])) for j in range(s, len(counts), slots)]
            for s in range(slots)
        ]
        share = min(sum(n for _, n in shards) for shards in self.slots)
        self.per_slot = share // self.batch_size
        if self.per_slot == 0:
            raise DataSourceError(
                f"data.batch_size={self.batch_size} is larger than the {share} samples of the "
                f"smallest of {slots} shard shares (ranks × loader workers); lower "
                "data.batch_size or data.num_workers."
            )
        used = slots * self.per_slot * self.batch_size
        if used < sum(counts) and rank == 0:
            warnings.warn(
                f"data.shards: each epoch trains on {used} of the {sum(counts)} samples "
                f"({self.per_slot} batches per rank and loader worker, from shards split "
                f"unevenly over {slots} of them); the rest changes from epoch to epoch.",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return self.workers * self.per_slot * self.batch_size

    def slot_order(self, slot: int) -> list[int]:
        """Dataset indices slot ``slot`` reads in epoch :attr:`epoch`: whole batches only."""
        generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, slot))
        shards = self.slots[slot]
        order: list[int] = []
        for j in torch.randperm(len(shards), generator=generator).tolist():
            start, n = shards[j]
            order.extend((start + torch.randperm(n, generator=generator)).tolist())
        return order[: self.per_slot * self.batch_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        streams = [self.slot_order(self.rank * self.workers + w) for w in range(self.workers)]
        b = self.batch_size
        order = []
        for k in range(self.workers * self.per_slot):
            t = k // self.workers  # batch k is batch t of worker k mod workers
            order.extend(streams[k % self.workers][t * b : (t + 1) * b])
        skip, self.skip_batches = self.skip_batches * b, 0
        return iter([(i, item_seed(self.seed, self.epoch, i)) for i in order[skip:]])


def training_sampler(
    source: ImageSource,
    dataset: Dataset[Any],
    batch_size: int,
    seed: int,
    ranks: int,
    rank: int,
    workers: int,
) -> ResumableSampler:
    """The training order of ``source``: by shard for shards, else a seeded permutation."""
    if isinstance(source, ShardSource):
        return ShardSampler(dataset, batch_size, seed, ranks, rank, source.counts, workers)
    return ResumableSampler(dataset, batch_size, seed, ranks, rank)
