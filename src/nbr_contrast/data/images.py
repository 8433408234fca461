"""Every dataset the project loads by name, one split at a time, as a map-style dataset.

``Images("cifar10_mini", "train")`` is the built-in CIFAR-10 subset's training split,
``Images("cifar10", "test", root=...)`` torchvision's CIFAR-10 files, and likewise
``cifar100``, ``stl10``, ``imagefolder`` (class folders, or a ``train_list``), ``npz`` and
``webdataset`` shards: the sources of :mod:`nbr_contrast.data.sources`, the ones
``data=<name>`` selects on the command line. Items are ``(PIL image, label)`` pairs (label
``-1`` where unknown), so any torch code can use them, and
:class:`~nbr_contrast.data.datamodule.ViewsDataModule` trains on the source inside (keeping
the in-memory fast path of the built-in, CIFAR, STL-10 and npz images and the shard order
of WebDataset shards).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from nbr_contrast.data.config import DataConfig
from nbr_contrast.data.image_source import ImageSource
from nbr_contrast.data.sources import SOURCE_NAMES, build_sources

SPLITS = ("train", "test", "reference")


class Images(ImageSource):
    """One split of a dataset the project loads by name.

    Args:
        name: One of ``nbr_contrast.data.sources.SOURCE_NAMES``.
        split: ``train``, ``test`` (labelled test images) or ``reference`` (the labelled
            images unlabelled training data is evaluated against, where there are some).
        root: Dataset folder (torchvision datasets, STL-10, image folders).
        train_path: Training ``.npz`` file (``name="npz"``).
        test_path: Test ``.npz`` file (``name="npz"``).
        shards: WebDataset training shards (a brace pattern or a list of ``.tar`` files).
        val_shards: Labelled WebDataset test shards.
        train_list: A text file listing an image folder's training images.
        class_list: A text file restricting an image folder to some classes.
        labels: Whether an image folder's (or shards') images have labels (``None``: detect).
        stl10_split: STL-10's training split: ``train``, ``train+unlabeled`` or ``unlabeled``.
        eval_root: A labelled image folder that evaluates unlabelled training images.
        download: Let torchvision download a missing dataset.
        on_corrupt: ``fail`` or ``skip`` images that cannot be decoded.

    Raises:
        ValueError: For an unknown name or split, or a split the dataset does not have.
        DataSourceError: When the data cannot be loaded (naming the setting to change).
    """

    def __init__(
        self,
        name: str = "cifar10_mini",
        split: str = "train",
        root: str | None = None,
        train_path: str | None = None,
        test_path: str | None = None,
        shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        train_list: str | None = None,
        class_list: str | None = None,
        labels: bool | None = None,
        stl10_split: str = "train",
        eval_root: str | None = None,
        download: bool = False,
        on_corrupt: str = "fail",
    ) -> None:
        if name not in SOURCE_NAMES:
            raise ValueError(f"Images(name={name!r}): valid: {', '.join(SOURCE_NAMES)}.")
        if split not in SPLITS:
            raise ValueError(f"Images(split={split!r}): valid: {', '.join(SPLITS)}.")
        config = DataConfig(
            name=name,
            root=root,
            train_path=train_path,
            test_path=test_path,
            shards=shards,
            val_shards=val_shards,
            train_list=train_list,
            class_list=class_list,
            labels=labels,
            split=stl10_split,
            eval_root=eval_root,
            download=download,
            on_corrupt=on_corrupt,
        )
        source = getattr(build_sources(config), split)
        if source is None:
            raise ValueError(f"Images(name={name!r}) has no {split} images.")
        self.source: ImageSource = source
        self.labels = source.labels
        self.classes = source.classes

    def get_image(self, i: int) -> Image.Image:
        """Image ``i`` in RGB mode."""
        return self.source.get_image(i)

    @contextmanager
    def open_image(self, i: int) -> Iterator[Image.Image]:
        """Image ``i`` opened for one use.

        See :meth:`~nbr_contrast.data.image_source.ImageSource.open_image`.
        """
        with self.source.open_image(i) as image:
            yield image

    def as_uint8(self) -> np.ndarray | None:
        """Every image as one ``uint8`` array, or ``None`` for a lazy source."""
        return self.source.as_uint8()
