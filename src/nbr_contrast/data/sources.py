"""Image sources by name: the packaged subset, ``.npz`` JPEG archives, torchvision datasets.

:func:`build_sources` turns a :class:`~nbr_contrast.config.DataConfig` into a ``(train,
test)`` pair of sources (:mod:`nbr_contrast.data.image_source`): held in memory for every
kind but image folders, which :mod:`nbr_contrast.data.folders` reads lazily. Every failure
a user can fix from the config raises a ``DataSourceError`` naming the setting to change.
"""

from __future__ import annotations

import functools
import io
import zipfile
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nbr_contrast.data.folders import folder_sources
from nbr_contrast.data.image_source import (
    DECODE_ERRORS,
    ArraySource,
    DataSourceError,
    ImageSource,
    check_on_corrupt,
    to_rgb,
    warn_skipped,
)

SOURCE_NAMES = ("cifar10_mini", "cifar10", "cifar100", "stl10", "imagefolder", "npz")


def load_npz(
    path: str | Path, on_corrupt: str = "fail", setting: str = "data.train_path"
) -> ArraySource:
    """Decode a JPEG archive (arrays ``jpeg``, ``offsets``, ``labels``, ``classes``) once.

    Args:
        path: The ``.npz`` file.
        on_corrupt: ``"fail"`` raises on an image that cannot be decoded; ``"skip"`` drops it
            (with a warning giving the count), so dataset indices refer to the kept images.
        setting: Config key that holds ``path``, named in error messages.

    Returns:
        The decoded images, labels and class names.

    Raises:
        DataSourceError: If the file is missing or malformed, or an image is corrupt and
            ``on_corrupt="fail"``.
    """
    check_on_corrupt(on_corrupt)
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(
            f"{setting}={str(path)!r} does not exist; set {setting} to a .npz file with "
            "arrays jpeg, offsets, labels and classes (see scripts/make_mini_dataset.py)."
        )
    try:
        with np.load(path) as archive:
            jpeg, offsets = archive["jpeg"], archive["offsets"]
            labels, classes = archive["labels"], archive["classes"]
    except (KeyError, OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        reason = str(err) or type(err).__name__
        raise DataSourceError(
            f"{setting}={str(path)!r} is not a JPEG archive with arrays jpeg, offsets, labels "
            f"and classes (empty, truncated or another format: {reason}); point {setting} at "
            "a complete .npz (see scripts/make_mini_dataset.py)."
        ) from err
    if len(offsets) != len(labels) + 1:
        raise DataSourceError(
            f"{setting}={str(path)!r}: {len(offsets)} offsets for {len(labels)} labels "
            "(expected one more offset than labels)."
        )
    images, kept = [], []
    for i in range(len(labels)):
        try:
            with Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())) as img:
                images.append(np.asarray(to_rgb(img)))
        except DECODE_ERRORS as err:
            if on_corrupt == "fail":
                raise DataSourceError(
                    f"image {i} of {str(path)!r} cannot be decoded ({err}); set "
                    "data.on_corrupt=skip to drop unreadable images."
                ) from err
            continue
        kept.append(i)
    warn_skipped(len(labels) - len(kept), repr(str(path)))
    if not images:
        raise DataSourceError(f"{setting}={str(path)!r} holds no decodable images.")
    if len({a.shape for a in images}) > 1:
        raise DataSourceError(f"{setting}={str(path)!r}: images differ in size.")
    return ArraySource(np.stack(images), labels[kept], [str(c) for c in classes])


@functools.cache
def mini_source(split: str) -> ArraySource:
    """Load the CIFAR-10 subset shipped with the package (500/100 images per class).

    The decoded split is cached per process and shared between callers: treat it as
    read-only.

    Args:
        split: ``"train"`` (5,000 images) or ``"test"`` (1,000 images).

    Returns:
        The decoded split.

    Raises:
        ValueError: If ``split`` is neither ``"train"`` nor ``"test"``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; expected 'train' or 'test'.")
    asset = resources.files("nbr_contrast.data").joinpath("assets", f"cifar10_mini_{split}.npz")
    with resources.as_file(asset) as path:
        return load_npz(path, setting="the packaged cifar10_mini asset")


def _torchvision_split(name: str, root: str | None, train: bool, download: bool) -> ArraySource:
    """Load one split of a torchvision dataset into memory."""
    from torchvision import datasets

    if root is None:
        raise DataSourceError(
            f"data.name={name} needs data.root: set data.root to the folder that holds (or "
            "should receive) the dataset files."
        )
    kinds: dict[str, Any] = {
        "cifar10": datasets.CIFAR10,
        "cifar100": datasets.CIFAR100,
        "stl10": datasets.STL10,
    }
    cls = kinds[name]
    split_arg = {"split": "train" if train else "test"} if name == "stl10" else {"train": train}
    try:
        dataset = cls(root=root, download=download, **split_arg)
    except (RuntimeError, OSError) as err:
        action = "could not be downloaded" if download else "was not found"
        raise DataSourceError(
            f"{name} {action} under data.root={root!r} ({err}). Set data.download=true on a "
            f"machine with internet access, or point data.root at a folder that holds "
            f"torchvision's {cls.base_folder!r} folder."
        ) from err
    if name == "stl10":
        images = dataset.data.transpose(0, 2, 3, 1)
        labels = dataset.labels
    else:
        images, labels = dataset.data, dataset.targets
    return ArraySource(np.ascontiguousarray(images), labels, dataset.classes)


def build_sources(cfg: Any) -> tuple[ImageSource, ImageSource]:
    """Build the ``(train, test)`` sources that ``cfg`` describes.

    Args:
        cfg: A :class:`~nbr_contrast.config.DataConfig` (or a DictConfig with its fields).

    Returns:
        ``(train, test)``.

    Raises:
        DataSourceError: If ``cfg.name`` is unknown or the data cannot be loaded.
    """
    name = str(cfg.name)
    on_corrupt = str(cfg.on_corrupt)
    check_on_corrupt(on_corrupt)
    if name == "cifar10_mini":
        return mini_source("train"), mini_source("test")
    if name in ("cifar10", "cifar100", "stl10"):
        root = None if cfg.root is None else str(cfg.root)
        return (
            _torchvision_split(name, root, True, bool(cfg.download)),
            _torchvision_split(name, root, False, bool(cfg.download)),
        )
    if name == "imagefolder":
        return folder_sources(cfg.root, cfg.class_list, on_corrupt)
    if name == "npz":
        pair = []
        for setting, path in (
            ("data.train_path", cfg.train_path),
            ("data.test_path", cfg.test_path),
        ):
            if path is None:
                raise DataSourceError(f"data.name=npz needs {setting}: set it to a .npz file.")
            pair.append(load_npz(path, on_corrupt, setting))
        return pair[0], pair[1]
    raise DataSourceError(f"data.name={name!r} is unknown; valid names: {', '.join(SOURCE_NAMES)}.")
