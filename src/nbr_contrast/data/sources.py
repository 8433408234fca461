"""Image sources: in-memory arrays, ``.npz`` JPEG archives, torchvision datasets, folders.

A source maps a dataset index ``i`` to an RGB :class:`PIL.Image.Image` and a class label.
In-memory sources (:class:`ArraySource`) also hand out every image as one ``uint8`` array
(for the GPU pipeline); lazy sources (:class:`FolderSource`) read files on demand.
:func:`build_sources` turns a :class:`~nbr_contrast.config.DataConfig` into a
``(train, test)`` pair. Every failure a user can fix from the config raises
:class:`DataSourceError` naming the setting to change.
"""

from __future__ import annotations

import functools
import io
import warnings
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SOURCE_NAMES = ("cifar10_mini", "cifar10", "cifar100", "stl10", "imagefolder", "npz")
ON_CORRUPT = ("fail", "skip")
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)
DECODE_ERRORS = (OSError, ValueError, SyntaxError)
TEST_FOLDERS = ("val", "test")
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
# grayscale modes wider than 8 bits: scaled, not clipped, to 8 bits
WIDE_MODES = (*SIXTEEN_BIT, "I", "F")


class DataSourceError(ValueError):
    """A dataset cannot be loaded; the message names the setting to change and how."""


def _wide_to_l(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image as 8-bit ``L``.

    16-bit values (``I;16*`` always; ``I`` and ``F`` when a value exceeds 255) map
    0..65535 to 0..255; ``F`` images within [0, 1] map to 0..255; other ``I``/``F`` values
    are taken as 8-bit. Values outside the range are clipped.
    """
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if image.mode == "F" and top <= 1.0 and float(values.min(initial=0.0)) >= 0.0:
        values = values * 255.0
    elif image.mode in SIXTEEN_BIT or top > 255.0:
        values = values * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as a loaded RGB image (grayscale, RGBA, palette, ... converted).

    16-bit and float grayscale images are scaled to 8 bits (:func:`_wide_to_l`), not
    clipped: Pillow's own conversion would turn a 16-bit PNG white.

    Args:
        image: Any Pillow image.

    Returns:
        A new RGB image that no longer depends on the file it was read from.
    """
    if image.mode in WIDE_MODES:
        image = _wide_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _check_on_corrupt(on_corrupt: str) -> None:
    if on_corrupt not in ON_CORRUPT:
        raise DataSourceError(f"data.on_corrupt={on_corrupt!r} is not one of {ON_CORRUPT}.")


def _warn_skipped(skipped: int, where: object) -> None:
    if skipped:
        warnings.warn(
            f"skipped {skipped} corrupt image(s) in {where} (data.on_corrupt=skip)", stacklevel=3
        )


class ImageSource(ABC):
    """A labelled set of RGB images addressed by dataset index.

    Attributes:
        labels: Class index of every image, ``int64`` ``[N]``.
        classes: Class names; ``labels`` index into this list.
    """

    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @abstractmethod
    def get_image(self, i: int) -> Image.Image:
        """Return image ``i`` in RGB mode.

        Args:
            i: Dataset index in ``[0, len(self))``.

        Returns:
            The image.
        """

    def as_uint8(self) -> np.ndarray | None:
        """Return every image as one ``uint8`` array ``[N, H, W, 3]``, or ``None`` if lazy."""
        return None


class ArraySource(ImageSource):
    """Images held in memory as one ``uint8`` array.

    Args:
        images: RGB images ``[N, H, W, 3]`` ``uint8``.
        labels: Class indices ``[N]``.
        classes: Class names.

    Raises:
        DataSourceError: If the shapes or dtype do not fit.
    """

    def __init__(
        self, images: np.ndarray, labels: Sequence[int] | np.ndarray, classes: Sequence[str]
    ):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise DataSourceError(
                f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}"
            )
        labels_array = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels_array) != len(images):
            raise DataSourceError(f"{len(images)} images but {len(labels_array)} labels")
        self.images = images
        self.labels = labels_array
        self.classes = [str(c) for c in classes]

    def get_image(self, i: int) -> Image.Image:
        """Return image ``i`` in RGB mode."""
        return Image.fromarray(self.images[i], mode="RGB")

    def as_uint8(self) -> np.ndarray:
        """Return every image as one ``uint8`` array ``[N, H, W, 3]``."""
        return self.images


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
    _check_on_corrupt(on_corrupt)
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
    _warn_skipped(len(labels) - len(kept), repr(str(path)))
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


def read_class_list(path: str | Path) -> list[str]:
    """Read a class-list file: one folder name per line, blank lines ignored.

    Args:
        path: The text file.

    Returns:
        Folder names in file order.

    Raises:
        DataSourceError: If the file is missing or lists no class.
    """
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(f"data.class_list={str(path)!r} does not exist.")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataSourceError(f"data.class_list={str(path)!r} lists no class.")
    return names


class FolderSource(ImageSource):
    """A lazy ImageFolder-style tree ``root/<class>/<image>`` (sub-folders searched too).

    Args:
        root: Folder with one sub-folder per class.
        class_list: Class folder names to use, in label order, or a text file listing them
            one per line; ``None`` uses every sub-folder, sorted.
        on_corrupt: ``"fail"`` raises when an image cannot be read; ``"skip"`` checks every
            file once up front (Pillow's ``verify``) and drops the unreadable ones.

    Raises:
        DataSourceError: If ``root`` is missing or holds no image, or a listed class has no
            folder.
    """

    def __init__(
        self,
        root: str | Path,
        class_list: str | Path | Sequence[str] | None = None,
        on_corrupt: str = "fail",
    ) -> None:
        _check_on_corrupt(on_corrupt)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataSourceError(f"data.root: image folder {str(self.root)!r} does not exist.")
        if class_list is None:
            names = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        elif isinstance(class_list, (str, Path)):
            names = read_class_list(class_list)
        else:
            names = list(class_list)
        self.classes = names
        self.on_corrupt = on_corrupt
        paths, labels = [], []
        for label, name in enumerate(names):
            folder = self.root / name
            files = sorted(
                p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            paths.extend(files)
            labels.extend([label] * len(files))
        if on_corrupt == "skip":
            keep = [i for i, p in enumerate(paths) if _readable(p)]
            _warn_skipped(len(paths) - len(keep), repr(str(self.root)))
            paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
        if not paths:
            raise DataSourceError(
                f"data.root: no images found in {str(self.root)!r} for classes {names[:5]}"
                f"{' ...' if len(names) > 5 else ''}; expected {self.root}/<class>/<image>."
            )
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)

    def get_image(self, i: int) -> Image.Image:
        """Read image ``i`` and return it in RGB mode.

        Raises:
            DataSourceError: If the file cannot be decoded.
        """
        path = self.paths[i]
        try:
            with Image.open(path) as img:
                return to_rgb(img)
        except DECODE_ERRORS as err:
            raise DataSourceError(
                f"image {i} ({str(path)!r}) cannot be decoded ({err}); set "
                "data.on_corrupt=skip to drop unreadable images."
            ) from err


def _readable(path: Path) -> bool:
    """Whether Pillow can open and verify ``path``."""
    try:
        with Image.open(path) as img:
            img.verify()
    except DECODE_ERRORS:
        return False
    return True


def folder_sources(
    root: str | Path | None, class_list: str | None, on_corrupt: str
) -> tuple[FolderSource, FolderSource]:
    """Build train and test sources from ``root/train`` and ``root/val`` (or ``root/test``).

    Both splits share the train split's classes (or the class list), so labels agree.

    Args:
        root: Dataset folder with ``train/`` and ``val/`` (or ``test/``) sub-folders.
        class_list: Optional class-list file (one folder name per line).
        on_corrupt: ``"fail"`` or ``"skip"``.

    Returns:
        ``(train, test)``.

    Raises:
        DataSourceError: If ``root`` is unset or missing, lacks the split folders, or a listed
            class has no training folder.
    """
    if root is None:
        raise DataSourceError(
            "data.name=imagefolder needs data.root: set it to a folder holding train/ and "
            "val/ (or test/) sub-folders, each with one folder per class."
        )
    base = Path(root)
    train_dir = base / "train"
    test_dir = next((base / n for n in TEST_FOLDERS if (base / n).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataSourceError(
            f"data.root={str(root)!r} must hold train/ and val/ (or test/) sub-folders, each "
            "with one folder per class (ImageNet layout)."
        )
    names = (
        read_class_list(class_list)
        if class_list is not None
        else sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    )
    missing = [n for n in names if not (train_dir / n).is_dir()]
    if missing:
        raise DataSourceError(
            f"data.class_list names {len(missing)} class(es) with no folder in "
            f"{str(train_dir)!r}, e.g. {missing[:3]}."
        )
    return (
        FolderSource(train_dir, names, on_corrupt),
        FolderSource(test_dir, names, on_corrupt),
    )


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
    _check_on_corrupt(on_corrupt)
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
