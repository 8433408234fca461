"""STL-10 read from its binary files, every split: the labelled ones and the unlabelled one.

``root/stl10_binary/`` holds ``{train,test,unlabeled}_X.bin`` (``uint8`` images
``[N, 3, 96, 96]`` stored column-major, as the dataset's authors wrote them),
``{train,test}_y.bin`` (labels 1..10, one byte each) and ``class_names.txt``. Reading them
here rather than through torchvision lets a split skip torchvision's checksum of every file
and lets ``train+unlabeled`` carry label ``-1`` for its 100,000 unlabelled images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nbr_contrast.data.image_source import ArraySource, DataSourceError

FOLDER = "stl10_binary"
SIDE = 96
SPLITS = ("train", "train+unlabeled", "unlabeled")
CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


def _missing(root: Path, name: str) -> DataSourceError:
    return DataSourceError(
        f"stl10 was not found under data.root={str(root)!r} (no {FOLDER}/{name}). Set "
        f"data.download=true on a machine with internet access, or point data.root at a "
        f"folder that holds the {FOLDER!r} folder."
    )


def read_images(root: Path, part: str) -> np.ndarray:
    """The images of ``part`` (``train``, ``test``, ``unlabeled``) as ``uint8 [N, 96, 96, 3]``.

    Raises:
        DataSourceError: If the file is missing or not a whole number of images.
    """
    path = root / FOLDER / f"{part}_X.bin"
    if not path.is_file():
        raise _missing(root, path.name)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * SIDE * SIDE):
        raise DataSourceError(
            f"{str(path)!r} is not a whole number of 3x96x96 images (truncated?); download "
            "STL-10 again (data.download=true)."
        )
    # column-major [N, 3, W, H] on disk -> [N, H, W, 3]
    return np.ascontiguousarray(raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 3, 2, 1))


def read_labels(root: Path, part: str, count: int) -> np.ndarray:
    """The 0-based labels of ``part`` (``train`` or ``test``), ``int64 [count]``.

    Raises:
        DataSourceError: If the file is missing or does not hold one label per image.
    """
    path = root / FOLDER / f"{part}_y.bin"
    if not path.is_file():
        raise _missing(root, path.name)
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != count:
        raise DataSourceError(
            f"{str(path)!r} holds {len(labels)} labels for {count} images; download STL-10 "
            "again (data.download=true)."
        )
    return labels


def class_names(root: Path) -> list[str]:
    """The names in ``class_names.txt`` (the standard ten when the file is absent)."""
    path = root / FOLDER / "class_names.txt"
    if not path.is_file():
        return list(CLASSES)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def labelled_split(root: Path, part: str) -> ArraySource:
    """The labelled split ``train`` (5,000 images) or ``test`` (8,000 images)."""
    images = read_images(root, part)
    return ArraySource(images, read_labels(root, part, len(images)), class_names(root))


def training_split(root: Path, split: str) -> ArraySource:
    """The training images of ``data.split``: ``train``, ``train+unlabeled`` or ``unlabeled``.

    Unlabelled images have label ``-1``; ``train+unlabeled`` puts the labelled ones first.

    Raises:
        DataSourceError: For another split or missing files.
    """
    if split not in SPLITS:
        raise DataSourceError(f"data.split={split!r} is not an STL-10 split; valid: {SPLITS}.")
    parts = []
    if split != "unlabeled":
        parts.append(labelled_split(root, "train"))
    if split != "train":
        images = read_images(root, "unlabeled")
        parts.append(ArraySource(images, np.full(len(images), -1), class_names(root)))
    if len(parts) == 1:
        return parts[0]
    return ArraySource(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        parts[0].classes,
    )


def download(root: Path) -> None:
    """Fetch and unpack STL-10 under ``root`` with torchvision (when it is not there yet).

    Raises:
        DataSourceError: If the download fails.
    """
    from torchvision import datasets

    try:
        datasets.STL10(root=str(root), split="test", download=True)
    except (RuntimeError, OSError) as err:
        raise DataSourceError(
            f"stl10 could not be downloaded under data.root={str(root)!r} ({err}); point "
            f"data.root at a folder that holds the {FOLDER!r} folder."
        ) from err
