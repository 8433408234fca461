"""What a Lightning user brings: a map-style dataset of their images and a backbone module.

Nothing here uses the project's data classes: the dataset decodes the JPEGs of the package's
CIFAR-10 subset with PIL, as a user's own dataset would read its files.
"""

from __future__ import annotations

import io
from importlib import resources

import numpy as np
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import Dataset


class TinyCIFAR(Dataset):
    """Every ``every``-th image of the packaged CIFAR-10 subset as ``(PIL image, label)``."""

    def __init__(self, split: str, every: int) -> None:
        asset = resources.files("nbr_contrast.data").joinpath("assets", f"cifar10_mini_{split}.npz")
        with resources.as_file(asset) as path, np.load(path) as archive:
            jpeg, offsets = archive["jpeg"], archive["offsets"]
            keep = range(0, len(archive["labels"]), every)
            self.images = [jpeg[offsets[i] : offsets[i + 1]].tobytes() for i in keep]
            self.targets = [int(archive["labels"][i]) for i in keep]
            self.classes = [str(c) for c in archive["classes"]]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.open(io.BytesIO(self.images[i])).convert("RGB"), self.targets[i]


def resnet18() -> nn.Module:
    """torchvision's ResNet-18 as a feature extractor (its classifier replaced)."""
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    return model
