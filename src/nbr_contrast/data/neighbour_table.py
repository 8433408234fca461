"""The table of selected neighbours that training items serve (CLIM), in shared memory."""

from __future__ import annotations

import torch
from torch import Tensor


class NeighbourTable:
    """Selected neighbours per training image, in shared memory.

    The tensors are allocated before the loader workers start and updated in place, so
    persistent workers see every refresh. Row ``i`` holds ``counts[i]`` dataset indices
    (padded with -1); a row with count 0 holds ``i`` itself in column 0 (the fallback).

    Args:
        num_images: Training-set size.
        k: Most neighbours per image.
    """

    def __init__(self, num_images: int, k: int) -> None:
        self.ids = torch.full((num_images, k), -1, dtype=torch.int64).share_memory_()
        self.counts = torch.zeros(num_images, dtype=torch.int64).share_memory_()
        self.active = torch.zeros((), dtype=torch.bool).share_memory_()
        self.version = 0

    def update(self, table: Tensor, counts: Tensor) -> None:
        """Replace the table (shapes must match) and start serving neighbours."""
        if table.shape != self.ids.shape or counts.shape != self.counts.shape:
            raise ValueError(
                f"Neighbour table of shape {tuple(table.shape)} does not match the "
                f"{tuple(self.ids.shape)} the data module allocated."
            )
        self.ids.copy_(table)
        self.counts.copy_(counts)
        self.active.fill_(True)
        self.version += 1

    def draw(self, i: int) -> int:
        """One of image ``i``'s selected neighbours, uniformly (``i`` itself if none)."""
        n = max(int(self.counts[i]), 1)
        return int(self.ids[i, int(torch.randint(n, ()))])
