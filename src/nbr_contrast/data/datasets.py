"""Per-sample and per-batch datasets of an :class:`~nbr_contrast.data.image_source.ImageSource`.

Items carry the sample's id (its position in the source), so neighbour banks and dataset graphs can
refer back to images (the item formats are listed in :mod:`nbr_contrast.data.datamodule`).
A training item is keyed by ``(index, seed)``
(:class:`~nbr_contrast.data.sampling.ResumableSampler`) and made under :func:`seeded_rng`,
so it is the same whichever process makes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from nbr_contrast.data.image_source import ImageSource
from nbr_contrast.data.neighbour_table import NeighbourTable

SampleKey = int | tuple[int, int]
"""The key a dataset is indexed with, an index or ``(index, seed)`` from a resumable sampler."""


@contextmanager
def seeded_rng(key: SampleKey) -> Iterator[int]:
    """Run the block with torch's CPU generator seeded by the key's seed, if it has one.

    The generator's state outside the block is left as it was, so items are augmented the
    same whichever loader worker (or the main process) makes them and whatever it made
    before: a resumed run, or one with another ``data.num_workers``, gets the same views.

    Yields:
        The item's sample id.
    """
    if isinstance(key, int):
        yield key
        return
    index, seed = key
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield index
    finally:
        generator.set_state(state)


class SourceDataset(Dataset[dict[str, Any]]):
    """Items ``{key: transform(image), "label", "sample_id"}`` of an image source.

    The source is an :class:`~nbr_contrast.data.image_source.ImageSource`.

    The transform receives a ``uint8`` ``[3, H, W]`` tensor; in-memory sources skip PIL.

    Args:
        source: The images and labels.
        transform: Applied to each image.
        key: Dict key of the transformed image (``"views"`` or ``"image"``).
        neighbours: Table of neighbours to serve with each item (while it is active).
        neighbour_transform: Transform of the served neighbour image.
    """

    def __init__(
        self,
        source: ImageSource,
        transform: Callable[[Tensor], Any],
        key: str,
        neighbours: NeighbourTable | None = None,
        neighbour_transform: Callable[[Tensor], Any] | None = None,
    ) -> None:
        self.source = source
        self.transform = transform
        self.key = key
        self.neighbours = neighbours
        self.neighbour_transform = neighbour_transform or transform
        self._array = source.as_uint8()

    def __len__(self) -> int:
        return len(self.source)

    def image(self, i: int) -> Tensor:
        """Image ``i`` as ``uint8 [3, H, W]``."""
        if self._array is not None:
            return torch.from_numpy(np.ascontiguousarray(self._array[i])).permute(2, 0, 1)
        return v2.functional.pil_to_tensor(self.source.get_image(i))

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        with seeded_rng(key) as i:
            item = {
                self.key: self.transform(self.image(i)),
                "label": torch.tensor(int(self.source.labels[i]), dtype=torch.int64),
                "sample_id": torch.tensor(i, dtype=torch.int64),
            }
            if self.neighbours is not None and bool(self.neighbours.active):
                j = self.neighbours.draw(i)
                item[f"neighbour_{self.key}"] = self.neighbour_transform(self.image(j))
                item["neighbour_id"] = torch.tensor(j, dtype=torch.int64)
        return item


class ResidentDataset(Dataset[dict[str, Any]]):
    """Whole batches ``{"label", "sample_id"}`` (and ``"neighbour_id"``) sliced on the device.

    The GPU pipeline's dataset for in-memory sources: the key is a batch of dataset indices
    already on the device plus the batch's seed (from
    :class:`~nbr_contrast.data.sampling.ResidentBatchSampler`), and the item is the whole
    batch, gathered with one indexing op per field, with no Python per image and no read
    back to the host. A served neighbour is drawn per sample from the batch's seed, so a
    resumed run draws the same ones.

    Args:
        source: The images and labels.
        device: Where labels, indices and the neighbour table live.
        neighbours: Table of neighbours to serve with each item (once one is set).
    """

    def __init__(
        self, source: ImageSource, device: torch.device, neighbours: NeighbourTable | None = None
    ) -> None:
        self.device = device
        self.labels = torch.as_tensor(np.asarray(source.labels), dtype=torch.int64).to(device)
        self.neighbours = neighbours
        self._table: tuple[int, Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[Tensor, int]) -> dict[str, Any]:
        index, seed = key
        item = {"label": self.labels[index], "sample_id": index}
        if self.neighbours is not None and self.neighbours.version > 0:
            item["neighbour_id"] = self.draw_neighbours(index, seed)
        return item

    def draw_neighbours(self, index: Tensor, seed: int) -> Tensor:
        """One selected neighbour per sample, uniformly (itself if none), seeded by ``seed``."""
        assert self.neighbours is not None
        if self._table is None or self._table[0] != self.neighbours.version:
            ids = self.neighbours.ids.to(self.device)
            counts = self.neighbours.counts.to(self.device)
            self._table = (self.neighbours.version, ids, counts)
        _, ids, counts = self._table
        generator = torch.Generator(device=self.device).manual_seed(seed)
        u = torch.rand(index.shape, generator=generator, device=self.device)
        n = counts[index].clamp_min(1)
        column = torch.minimum((u * n).long(), n - 1)
        return ids[index, column]
