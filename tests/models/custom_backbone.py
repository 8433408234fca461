"""Modules built by ``backbone=custom backbone._target_=tests.models.custom_backbone.X``."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """Conv, BN, ReLU, global pool: ``[B, 3, H, W] -> [B, width, 1, 1]`` (no ``out_dim``)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))))


class PerBatchNet(nn.Module):
    """Pools over the batch too: one vector for the whole batch, not one per image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(0, 2, 3))
