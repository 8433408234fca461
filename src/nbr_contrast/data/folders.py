"""Image folders: a lazy :class:`FolderSource` per split of an ImageNet-style tree.

``root/train/<class>/<image>`` and ``root/val/<class>/<image>`` (or ``root/test/``), read
on demand; a class-list file can restrict the classes (e.g. ImageNet-100).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from nbr_contrast.data.image_source import (
    DECODE_ERRORS,
    DataSourceError,
    ImageSource,
    check_on_corrupt,
    to_rgb,
    warn_skipped,
)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)
TEST_FOLDERS = ("val", "test")


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
        check_on_corrupt(on_corrupt)
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
            warn_skipped(len(paths) - len(keep), repr(str(self.root)))
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
