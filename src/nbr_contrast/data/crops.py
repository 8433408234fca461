"""Crops drawn on the full image, cut per sample in loader workers (GPU pipeline, lazy sources).

Lazily decoded images (image folders) come in all sizes, so they cannot be stacked into one
batch and cropped on the device like an in-memory ``uint8`` array. Instead a loader worker
draws each view's box on the original image (:func:`view_box`; for ``crop="rrc"`` with
torchvision's ``RandomResizedCrop`` distribution) and resizes it to the view's size
(:func:`cut`), so a training item holds one ``uint8 [3, size, size]`` tile per view
(:class:`CropDataset`), and :class:`~nbr_contrast.data.gpu_views.GpuViews` does the rest of
each view (flip, colour, blur, solarise, normalise) in batches on the device without cropping
again. A JPEG is decoded at a reduced scale when every box keeps at least its view's
resolution there (:func:`draft`).

Boxes are drawn from torch's global CPU generator, which :class:`CropDataset` seeds per item
(:func:`~nbr_contrast.data.datasets.seeded_rng`), so the crops of a run are reproducible and
a resumed run gets the same ones, whichever worker makes them. Tiles are resized with
Pillow's bilinear filter, antialiased like the CPU pipeline's ``antialias=True`` resize (the
two agree up to rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from nbr_contrast.data.config import CROP_KINDS, ViewConfig
from nbr_contrast.data.datasets import SampleKey, seeded_rng
from nbr_contrast.data.gpu_params import random_resized_crop_params
from nbr_contrast.data.image_source import ImageSource, to_rgb
from nbr_contrast.data.neighbour_table import NeighbourTable

Box = tuple[int, int, int, int]
"""A crop box ``(top, left, height, width)`` in pixels of the original image."""


def view_box(view: ViewConfig, height: int, width: int) -> Box:
    """Draw the box that ``view`` cuts from a ``height`` x ``width`` image.

    ``rrc``: a random-resized-crop box with torchvision's distribution (area fraction uniform
    in ``crop_scale``, log aspect ratio uniform in ``log(crop_ratio)``, ten tries, then the
    centred fallback), drawn from torch's global CPU generator. ``pad``: the centred square
    (the CPU pipeline's resize of the shorter side; the padded random crop follows on the
    device). ``none``: the whole image (squashed to a square, as the CPU pipeline resizes it).

    Args:
        view: The view's config.
        height: Image height.
        width: Image width.

    Returns:
        The box.

    Raises:
        ValueError: If ``view.crop`` is unknown.
    """
    if view.crop == "rrc":
        scale, ratio = tuple(view.crop_scale), tuple(view.crop_ratio)
        drawn = random_resized_crop_params(1, height, width, scale, ratio, None, "cpu")[0]
        top, left, box_h, box_w = (int(v) for v in drawn.tolist())
        return top, left, box_h, box_w
    if view.crop == "pad":
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side
    if view.crop == "none":
        return 0, 0, height, width
    raise ValueError(f"data.views: unknown crop {view.crop!r}; valid: {CROP_KINDS}.")


def draft(image: Image.Image, boxes: Sequence[Box], sizes: Sequence[int]) -> float:
    """Let a JPEG decode at a reduced scale at which every box keeps its view's resolution.

    Pillow's ``draft`` decodes a JPEG at 1/2, 1/4 or 1/8 of its size; this asks for the
    largest reduction at which each box still spans at least its view's ``size`` pixels a
    side. Other formats, and images already decoded, are left as they are.

    Args:
        image: The opened, not yet decoded image.
        boxes: The boxes that will be cut, in original pixels.
        sizes: The side length each box is resized to.

    Returns:
        Decoded pixels per original pixel (``1.0`` when the image is decoded at full size).
    """
    reduction = min(min(h, w) // s for (_, _, h, w), s in zip(boxes, sizes, strict=True))
    if reduction < 2:
        return 1.0
    width, height = image.size
    drafted = image.draft("RGB", (-(-width // reduction), -(-height // reduction)))
    return 1.0 if drafted is None else drafted[1][2] / width


def cut(image: Image.Image, box: Box, size: int, factor: float = 1.0) -> Tensor:
    """Resize the part of ``image`` inside ``box`` to a ``size`` x ``size`` tile.

    Args:
        image: A decoded RGB image.
        box: The box in original pixels.
        size: Side length of the tile.
        factor: Decoded pixels per original pixel (from :func:`draft`).

    Returns:
        The tile, ``uint8 [3, size, size]``.
    """
    top, left, box_h, box_w = (v * factor for v in box)
    region = (left, top, left + box_w, top + box_h)
    tile = image.resize((size, size), Image.Resampling.BILINEAR, box=region)
    return v2.functional.pil_to_tensor(tile)


class ViewCrops:
    """Cut one tile per view from an image of a source, each from a box on the full image.

    Args:
        views: One config per view.

    Raises:
        ValueError: If ``views`` is empty or a crop kind is unknown.
    """

    def __init__(self, views: Sequence[ViewConfig]) -> None:
        if not views:
            raise ValueError("data.views is empty; configure at least one view.")
        for view in views:
            if view.crop not in CROP_KINDS:
                raise ValueError(f"data.views: unknown crop {view.crop!r}; valid: {CROP_KINDS}.")
        self.views = list(views)
        self.sizes = [int(v.size) for v in views]

    def boxes(self, height: int, width: int) -> list[Box]:
        """Draw every view's box on a ``height`` x ``width`` image (see :func:`view_box`)."""
        return [view_box(view, height, width) for view in self.views]

    def __call__(self, source: ImageSource, i: int) -> list[Tensor]:
        """Read image ``i`` of ``source`` (reduced when possible) and cut every view's tile.

        Returns:
            One ``uint8 [3, size, size]`` tile per view.
        """
        with source.open_image(i) as opened:
            width, height = opened.size
            boxes = self.boxes(height, width)
            factor = draft(opened, boxes, self.sizes)
            image = to_rgb(opened)
        return [cut(image, b, s, factor) for b, s in zip(boxes, self.sizes, strict=True)]


class CropDataset(Dataset[dict[str, Any]]):
    """Training items ``{"crops": [uint8 [3, size, size] per view], "label", "sample_id"}``.

    The GPU pipeline's dataset for lazily decoded sources. While a neighbour table is active,
    items also carry ``"neighbour_crops"`` (the first two views of one served neighbour) and
    ``"neighbour_id"``. An item keyed ``(index, seed)`` is made under
    :func:`~nbr_contrast.data.datasets.seeded_rng`.

    Args:
        source: The images and labels.
        views: One config per view.
        neighbours: Table of neighbours to serve with each item (while it is active).
    """

    def __init__(
        self,
        source: ImageSource,
        views: Sequence[ViewConfig],
        neighbours: NeighbourTable | None = None,
    ) -> None:
        self.source = source
        self.crops = ViewCrops(views)
        self.pair = ViewCrops(list(views)[:2])
        self.neighbours = neighbours

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        with seeded_rng(key) as i:
            item = {
                "crops": self.crops(self.source, i),
                "label": torch.tensor(int(self.source.labels[i]), dtype=torch.int64),
                "sample_id": torch.tensor(i, dtype=torch.int64),
            }
            if self.neighbours is not None and bool(self.neighbours.active):
                j = self.neighbours.draw(i)
                item["neighbour_crops"] = self.pair(self.source, j)
                item["neighbour_id"] = torch.tensor(j, dtype=torch.int64)
        return item
