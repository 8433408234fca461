"""Loaders of ``task=linear`` and ``task=finetune``: resumable training, sharded testing.

Training batches come from the datamodule's linear-evaluation loader (random-resized crop
and flip, :meth:`~nbr_contrast.data.datamodule.ViewsDataModule.linear_train_dataloader`) or,
with ``task.precompute``, from fixed feature tensors; both follow the seeded, rank-sharded,
resumable order of :class:`~nbr_contrast.data.sampling.ResumableSampler`, so a run on N
ranks with batch B draws the same images per step as one process with batch N*B. The test
images are split over the ranks without padding (:class:`RankSliceSampler`), so the synced
accuracy counts every test image exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from nbr_contrast.app.evaluation.report import SplitFeatures
from nbr_contrast.data.datamodule import ViewsDataModule
from nbr_contrast.data.sampling import training_position
from nbr_contrast.utils.dist import rank, world_size


class FeatureDataset(Dataset[dict[str, Tensor]]):
    """Precomputed features as items ``{"feature", "label", "sample_id"}`` by dataset index.

    Keys are dataset indices (``split.indices``) or a sampler's ``(index, seed)`` pairs (the
    seed is unused), so any training order of the images serves their features.
    """

    def __init__(self, split: SplitFeatures) -> None:
        self.split = split
        self.position = torch.full((int(split.indices.max()) + 1,), -1, dtype=torch.long)
        self.position[split.indices] = torch.arange(split.indices.shape[0])

    def __len__(self) -> int:
        return int(self.split.labels.shape[0])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        i = self.position[key[0] if isinstance(key, tuple) else key]
        s = self.split
        return {"feature": s.feats[i], "label": s.labels[i], "sample_id": s.indices[i]}


class RankSliceSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of a dataset of ``size`` items: no padding."""

    def __init__(self, size: int, ranks: int, this: int) -> None:
        self.size, self.ranks, self.this = size, ranks, this

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.this, self.size, self.ranks))

    def __len__(self) -> int:
        return len(range(self.this, self.size, self.ranks))


class HeadDataModule(L.LightningDataModule):
    """Training and test loaders of a head task.

    Args:
        data: The run's datamodule, set up (sources, transforms, workers, seed).
        batch_size: Training batch per rank (``task.batch_size``).
        features: ``(train, test)`` precomputed features, or ``None`` to load images.
    """

    def __init__(
        self,
        data: ViewsDataModule,
        batch_size: int,
        features: tuple[SplitFeatures, SplitFeatures] | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.batch_size = int(batch_size)
        self.features = features

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position (kept in checkpoints for an exact resume)."""
        return training_position(self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Start the training loader where the checkpoint's run stopped."""
        if state_dict:
            self.data.resume_at(int(state_dict["epoch"]), int(state_dict["batches"]))

    def train_dataloader(self) -> DataLoader[Any]:
        """Augmented training images, or the precomputed training features."""
        if self.features is None:
            return self.data.linear_train_dataloader(self.batch_size)
        return self.data.resumable_loader(FeatureDataset(self.features[0]), self.batch_size)

    def val_dataloader(self) -> DataLoader[Any]:
        """This rank's share of the test images (evaluation transform) or features."""
        size = self.data.eval_batch_size
        if self.features is not None:
            dataset: Dataset[Any] = FeatureDataset(self.features[1])
            workers = 0
        else:
            assert self.data.test_source is not None
            loader = self.data.eval_loader(self.data.test_source)
            dataset, workers = loader.dataset, loader.num_workers
        sampler = RankSliceSampler(len(dataset), world_size(), rank())  # type: ignore[arg-type]
        return DataLoader(dataset, batch_size=size, sampler=sampler, num_workers=workers)
