"""Image sources by name: the packaged subset, ``.npz`` JPEG archives, torchvision datasets.

:func:`build_sources` turns a :class:`~nbr_contrast.data.config.DataConfig` into the
:class:`DataSources` of a run (:mod:`nbr_contrast.data.image_source`): held in memory for
every kind but image folders and image lists (``nbr_contrast.data.folders``,
``nbr_contrast.data.image_list``) and WebDataset shards (``nbr_contrast.data.shards``),
which are read lazily. Every
failure a user can fix from the config raises a ``DataSourceError`` naming the setting to
change.

Unlabelled training images carry label ``-1``. Monitoring needs labels, so when no training
image has one the evaluation data comes from elsewhere: ``data.eval_root`` (a labelled
folder with ``train/`` and ``val/``), or STL-10's labelled splits for
``data.split=unlabeled``. Its train split is then the kNN *reference* set (the labelled
images test images are classified against), its val split the test set.
"""

from __future__ import annotations

import functools
import io
import zipfile
import zlib
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from nbr_contrast.data import stl10
from nbr_contrast.data.folders import folder_sources
from nbr_contrast.data.image_list import list_sources
from nbr_contrast.data.image_source import (
    DECODE_ERRORS,
    ArraySource,
    DataSourceError,
    ImageSource,
    check_on_corrupt,
    to_rgb,
    warn_skipped,
)
from nbr_contrast.data.shards import shard_sources

SOURCE_NAMES = ("cifar10_mini", "cifar10", "cifar100", "stl10", "imagefolder", "npz", "webdataset")


class DataSources(NamedTuple):
    """The sources of a run.

    Attributes:
        train: The training images (label ``-1`` where unknown).
        test: Labelled test images (validation, kNN report), or ``None`` without any.
        reference: Labelled images the kNN monitor and report classify ``test`` against
            when no training image has a label (``None`` otherwise).
    """

    train: ImageSource
    test: ImageSource | None
    reference: ImageSource | None = None


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
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        dataset = cls(root=root, download=download, train=train)
    except (RuntimeError, OSError) as err:
        action = "could not be downloaded" if download else "was not found"
        raise DataSourceError(
            f"{name} {action} under data.root={root!r} ({err}). Set data.download=true on a "
            f"machine with internet access, or point data.root at a folder that holds "
            f"torchvision's {cls.base_folder!r} folder."
        ) from err
    return ArraySource(np.ascontiguousarray(dataset.data), dataset.targets, dataset.classes)


def _stl10_sources(root: str | None, split: str, download: bool) -> DataSources:
    """STL-10's training ``split``, its labelled test split and (``unlabeled``) reference.

    For ``data.split=unlabeled`` the labelled train split is the kNN reference set.
    """
    if root is None:
        raise DataSourceError(
            "data.name=stl10 needs data.root: set data.root to the folder that holds (or "
            "should receive) the dataset files."
        )
    base = Path(root)
    if download and not (base / stl10.FOLDER / "test_y.bin").is_file():
        stl10.download(base)
    train = stl10.training_split(base, split)
    reference = stl10.labelled_split(base, "train") if split == "unlabeled" else None
    return DataSources(train, stl10.labelled_split(base, "test"), reference)


def _with_eval_root(sources: DataSources, eval_root: str | None, on_corrupt: str) -> DataSources:
    """Take the test and reference sets from ``data.eval_root`` (unlabelled training only).

    Raises:
        DataSourceError: If ``data.eval_root`` is set for labelled training images.
    """
    if eval_root is None:
        return sources
    if bool((np.asarray(sources.train.labels) >= 0).any()):
        raise DataSourceError(
            f"data.eval_root={eval_root!r} is for unlabelled training images, but these have "
            "labels; remove data.eval_root (the training data's own test split is used)."
        )
    reference, test = folder_sources(eval_root, None, on_corrupt, labels=True)
    return DataSources(sources.train, test, reference)


def build_sources(cfg: Any) -> DataSources:
    """Build the sources that ``cfg`` describes.

    Args:
        cfg: A :class:`~nbr_contrast.data.config.DataConfig` (or a DictConfig with its fields).

    Returns:
        The training, test and (for unlabelled training images) reference sources.

    Raises:
        DataSourceError: If ``cfg.name`` is unknown or the data cannot be loaded.
    """
    name = str(cfg.name)
    on_corrupt = str(cfg.on_corrupt)
    check_on_corrupt(on_corrupt)
    root = None if cfg.root is None else str(cfg.root)
    eval_root = None if cfg.eval_root is None else str(cfg.eval_root)
    if name == "stl10":
        sources = _stl10_sources(root, str(cfg.split), bool(cfg.download))
    elif name == "imagefolder" and cfg.train_list is not None:
        sources = DataSources(*list_sources(str(cfg.train_list), root, cfg.class_list, on_corrupt))
    elif name == "webdataset":
        sources = DataSources(*shard_sources(cfg, on_corrupt))
    elif name == "imagefolder":
        labels = None if cfg.labels is None else bool(cfg.labels)
        sources = DataSources(*folder_sources(root, cfg.class_list, on_corrupt, labels))
    else:
        sources = DataSources(*_labelled_sources(cfg, name, root, on_corrupt))
    return _with_eval_root(sources, eval_root, on_corrupt)


def _labelled_sources(
    cfg: Any, name: str, root: str | None, on_corrupt: str
) -> tuple[ImageSource, ImageSource]:
    """``(train, test)`` of the packaged subset, a CIFAR dataset or a pair of ``.npz`` files."""
    if name == "cifar10_mini":
        return mini_source("train"), mini_source("test")
    if name in ("cifar10", "cifar100"):
        return (
            _torchvision_split(name, root, True, bool(cfg.download)),
            _torchvision_split(name, root, False, bool(cfg.download)),
        )
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


def check_classes(sources: DataSources, num_classes: int, setting: str = "num_classes") -> None:
    """Fail when a source has more classes than ``num_classes`` or labels outside them.

    Args:
        sources: The training, test and reference sources.
        num_classes: The number of classes the model will classify into.
        setting: The name of that setting in the message (``data.num_classes`` on the
            command line).

    Raises:
        ValueError: Naming ``setting`` and the value that fits.
    """
    named = (("training", sources.train), ("test", sources.test), ("reference", sources.reference))
    for split, source in named:
        if source is None:
            continue
        if len(source.classes) > num_classes:
            raise ValueError(
                f"{setting}={num_classes} but the {split} data has {len(source.classes)} "
                f"classes; set {setting}={len(source.classes)}."
            )
        check_labels(split, np.asarray(source.labels), num_classes, setting)


def check_labels(
    split: str, labels: np.ndarray, num_classes: int, setting: str = "num_classes"
) -> None:
    """Fail on labels outside ``[0, num_classes)`` (``-1``: unknown) when the data loads."""
    bad = labels[(labels < -1) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(
            f"{setting}={num_classes} but {bad.size} {split} label(s) fall outside "
            f"[0, {num_classes}) (e.g. {int(bad[0])}); set {setting}="
            f"{max(int(labels.max()) + 1, num_classes)} or relabel the data (labels count "
            "from 0)."
        )
