"""Any map-style ``Dataset`` of images as an :class:`~nbr_contrast.data.image_source.ImageSource`.

:class:`DatasetSource` lets :class:`~nbr_contrast.data.datamodule.ViewsDataModule` train on
a user's dataset: items are an image (PIL, a ``uint8`` tensor ``[3, H, W]`` or an array
``[H, W, 3]``) or an ``(image, label, ...)`` tuple. Labels come from the dataset's
``targets`` or ``labels`` attribute (torchvision's convention) when it has one, else from
one pass over the dataset. :class:`ViewsDataset` wraps a dataset for a datamodule of your
own: its items are the batch contract's ``{"views", "label", "sample_id"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from nbr_contrast.data.config import ViewConfig
from nbr_contrast.data.datasets import SourceDataset
from nbr_contrast.data.image_source import ImageSource, to_rgb
from nbr_contrast.data.images import Images
from nbr_contrast.data.views import build_multiview

IMAGE_KINDS = "a PIL image, a uint8 tensor [3, H, W] or a uint8 array [H, W, 3]"


def item_image(item: Any) -> Any:
    """The image of a dataset item: the item itself, or the first field of a tuple."""
    return item[0] if isinstance(item, tuple | list) else item


def item_label(item: Any) -> int:
    """The label of a dataset item: the second field of a tuple, else ``-1`` (unknown)."""
    if isinstance(item, tuple | list) and len(item) > 1:
        return int(item[1])
    return -1


def to_pil(image: Any, where: str) -> Image.Image:
    """``image`` as an RGB PIL image.

    Raises:
        TypeError: For anything but ``IMAGE_KINDS`` (a float tensor is an image that was
            already transformed: the dataset must give raw images).
    """
    if isinstance(image, Image.Image):
        return to_rgb(image)
    array = image.numpy() if isinstance(image, torch.Tensor) else image
    if isinstance(array, np.ndarray) and array.dtype == np.uint8:
        if array.ndim == 2:
            return Image.fromarray(array, "L").convert("RGB")
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = np.moveaxis(array, 0, -1)
        if array.ndim == 3 and array.shape[-1] == 3:
            return Image.fromarray(np.ascontiguousarray(array), "RGB")
        if array.ndim == 3 and array.shape[-1] == 1:
            return Image.fromarray(np.ascontiguousarray(array[..., 0]), "L").convert("RGB")
    kind = (
        f"{type(image).__name__} {getattr(image, 'dtype', '')} {tuple(getattr(image, 'shape', ()))}"
    )
    raise TypeError(
        f"{where} is a {kind.strip()}, not an image: items must be {IMAGE_KINDS}, or "
        "(image, label) pairs; give the dataset without its tensor transform (the views "
        "are made by the datamodule)."
    )


def dataset_labels(dataset: Dataset[Any], name: str) -> np.ndarray:
    """Every item's label (``-1`` where unknown): ``targets``/``labels``, else one pass."""
    size = len(dataset)  # type: ignore[arg-type]
    for attr in ("targets", "labels"):
        values = getattr(dataset, attr, None)
        if values is not None and len(values) == size:
            return np.asarray(values, dtype=np.int64).reshape(-1)
    return np.asarray([item_label(dataset[i]) for i in range(size)], dtype=np.int64)


class DatasetSource(ImageSource):
    """The images and labels of a map-style dataset.

    Args:
        dataset: Items are an image or an ``(image, label, ...)`` tuple.
        name: What the dataset is (``"train"``, ``"test"``), for messages.

    Raises:
        TypeError: When the dataset has no length or its first item is not an image.
        ValueError: When it is empty.
    """

    def __init__(self, dataset: Dataset[Any], name: str = "train") -> None:
        if not hasattr(dataset, "__len__"):
            raise TypeError(
                f"the {name} dataset ({type(dataset).__name__}) has no length: give a "
                "map-style Dataset (with __len__ and __getitem__)."
            )
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError(f"the {name} dataset is empty.")
        self.dataset = dataset
        self.name = name
        to_pil(item_image(dataset[0]), f"item 0 of the {name} dataset")
        self.labels = dataset_labels(dataset, name)
        classes = getattr(dataset, "classes", None)
        count = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.classes = [str(c) for c in classes] if classes else [str(c) for c in range(count)]

    def get_image(self, i: int) -> Image.Image:
        """Image ``i`` in RGB mode."""
        return to_pil(item_image(self.dataset[i]), f"item {i} of the {self.name} dataset")


def as_source(data: Dataset[Any] | ImageSource, name: str) -> ImageSource:
    """The image source a datamodule trains on, for any dataset it is given.

    The result is an :class:`~nbr_contrast.data.image_source.ImageSource`.

    An :class:`~nbr_contrast.data.images.Images` split gives its own source, any other
    source is taken as it is, any other dataset is wrapped in :class:`DatasetSource`.
    """
    if isinstance(data, Images):
        return data.source
    return data if isinstance(data, ImageSource) else DatasetSource(data, name)


class ViewsDataset(SourceDataset):
    """A dataset's items as the batch contract's ``{"views", "label", "sample_id"}`` (CPU views).

    For a datamodule of your own: wrap its training dataset, and every method takes its
    batches.

    Args:
        dataset: Items are an image or an ``(image, label, ...)`` tuple.
        views: The views (see :func:`~nbr_contrast.data.recipes.view_recipe`).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
    """

    def __init__(
        self,
        dataset: Dataset[Any] | ImageSource,
        views: Sequence[ViewConfig],
        mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
        std: Sequence[float] = (0.2470, 0.2435, 0.2616),
    ) -> None:
        super().__init__(
            as_source(dataset, "train"), build_multiview(list(views), mean, std), "views"
        )
