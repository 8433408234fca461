"""Image folders: lazy sources of an ImageNet-style tree, or of any folder without labels.

``root/train/<class>/<image>`` and ``root/val/<class>/<image>`` (or ``root/test/``), read
on demand; a class-list file can restrict the classes (e.g. ImageNet-100). A folder without
that layout (flat, or nested any way) is a set of unlabelled images
(:func:`unlabelled_folder`): every image under it, label ``-1``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


class PathSource(ImageSource):
    """Image files read on demand, each with a label (``-1``: unknown).

    Args:
        root: The folder the files came from (named in messages).
        paths: The image files.
        labels: Label of each file.
        classes: Class names; ``labels`` index into this list.
        on_corrupt: ``"fail"`` raises when an image cannot be read; ``"skip"`` checks every
            file once up front (Pillow's ``verify``) and drops the unreadable ones.

    Raises:
        DataSourceError: If no (readable) image is left.
    """

    def __init__(
        self,
        root: Path,
        paths: list[Path],
        labels: list[int],
        classes: list[str],
        on_corrupt: str = "fail",
    ) -> None:
        check_on_corrupt(on_corrupt)
        self.root = root
        self.classes = classes
        self.on_corrupt = on_corrupt
        if on_corrupt == "skip":
            keep = [i for i, p in enumerate(paths) if _readable(p)]
            warn_skipped(len(paths) - len(keep), repr(str(root)))
            paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
        if not paths and classes:
            raise DataSourceError(
                f"data.root: no images found in {str(root)!r} for classes {classes[:5]}"
                f"{' ...' if len(classes) > 5 else ''}; expected {root}/<class>/<image>."
            )
        if not paths and root.name in ("train", *TEST_FOLDERS):
            raise DataSourceError(
                f"data.root: no class folders with images in {str(root)!r}; expected "
                f"{root}/<class>/<image>, one folder per class."
            )
        if not paths:
            raise DataSourceError(
                f"data.root: no images found in {str(root)!r}; expected {root}/train/<class>/ "
                f"and {root}/val/<class>/ (labelled), or images anywhere under it (unlabelled)."
            )
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)

    def get_image(self, i: int) -> Image.Image:
        """Read image ``i`` and return it in RGB mode.

        Raises:
            DataSourceError: If the file cannot be decoded.
        """
        with self.open_image(i) as img:
            return to_rgb(img)

    @contextmanager
    def open_image(self, i: int) -> Iterator[Image.Image]:
        """Open file ``i``, not yet decoded.

        See :meth:`~nbr_contrast.data.image_source.ImageSource.open_image`.

        Yields:
            The opened file, valid inside the ``with`` block.

        Raises:
            DataSourceError: If the file cannot be opened or decoded inside the block.
        """
        path = self.paths[i]
        try:
            with Image.open(path) as img:
                yield img
        except DECODE_ERRORS as err:
            raise DataSourceError(
                f"image {i} ({str(path)!r}) cannot be decoded ({err}); set "
                "data.on_corrupt=skip to drop unreadable images."
            ) from err


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (searched recursively), sorted by path."""
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def unlabelled_folder(root: str | Path, on_corrupt: str = "fail") -> PathSource:
    """Every image under ``root`` (flat or nested, sub-folders are not classes), label ``-1``.

    Raises:
        DataSourceError: If ``root`` is missing or holds no image.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataSourceError(f"data.root: image folder {str(base)!r} does not exist.")
    paths = image_files(base)
    return PathSource(base, paths, [-1] * len(paths), [], on_corrupt)


class FolderSource(PathSource):
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
        root = Path(root)
        if not root.is_dir():
            raise DataSourceError(f"data.root: image folder {str(root)!r} does not exist.")
        if class_list is None:
            names = sorted(p.name for p in root.iterdir() if p.is_dir())
        elif isinstance(class_list, (str, Path)):
            names = read_class_list(class_list)
        else:
            names = list(class_list)
        paths: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(names):
            files = image_files(root / name)
            paths.extend(files)
            labels.extend([label] * len(files))
        super().__init__(root, paths, labels, names, on_corrupt)


def _readable(path: Path) -> bool:
    """Whether Pillow can open and verify ``path``."""
    try:
        with Image.open(path) as img:
            img.verify()
    except DECODE_ERRORS:
        return False
    return True


def has_split_folders(root: Path) -> bool:
    """Whether ``root`` holds ``train/`` and ``val/`` (or ``test/``) sub-folders."""
    return (root / "train").is_dir() and any((root / n).is_dir() for n in TEST_FOLDERS)


def folder_sources(
    root: str | Path | None,
    class_list: str | None,
    on_corrupt: str,
    labels: bool | None = True,
) -> tuple[PathSource, PathSource | None]:
    """Train and test sources of ``root/{train,val}``, or every image under ``root`` unlabelled.

    Both labelled splits share the train split's classes (or the class list), so labels
    agree. Unlabelled images (``labels=False``, or ``None`` and no split folders, said in
    one line) have label ``-1`` and no test split.

    Args:
        root: Dataset folder with ``train/`` and ``val/`` (or ``test/``) sub-folders, or
            any folder of images.
        class_list: Optional class-list file (one folder name per line).
        on_corrupt: ``"fail"`` or ``"skip"``.
        labels: ``True`` (class folders), ``False`` (no labels) or ``None`` (detect).

    Returns:
        ``(train, test)``; ``test`` is ``None`` for unlabelled images.

    Raises:
        DataSourceError: If ``root`` is unset or missing, lacks the split folders (with
            ``labels=True``), or a listed class has no training folder.
    """
    if root is None:
        raise DataSourceError(
            "data.name=imagefolder needs data.root: set it to a folder holding train/ and "
            "val/ (or test/) sub-folders, each with one folder per class, or to a folder of "
            "unlabelled images."
        )
    base = Path(root)
    if labels is False or (labels is None and base.is_dir() and not has_split_folders(base)):
        if labels is None:
            from lightning.pytorch.utilities import rank_zero_info  # not needed by plain loops

            rank_zero_info(
                f"data.root={str(root)!r} has no train/ and val/ class folders: training on "
                "every image under it without labels (data.labels=false)."
            )
        return unlabelled_folder(base, on_corrupt), None
    if not has_split_folders(base):
        raise DataSourceError(
            f"data.root={str(root)!r} must hold train/ and val/ (or test/) sub-folders, each "
            "with one folder per class (ImageNet layout), or set data.labels=false."
        )
    train_dir = base / "train"
    test_dir = next(base / n for n in TEST_FOLDERS if (base / n).is_dir())
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
