"""An image folder's training images given as a list file (``data.train_list``).

One image per line: a path, relative to the list file's folder or absolute, optionally
followed by a tab and the image's class name; blank lines are ignored. The file is UTF-8
text (a byte-order mark is dropped). Classes are those
of ``data.class_list`` (in its order) or the names the list uses, sorted (numerically when
every name is a number). Labelled lists take their test images from ``data.root``'s
``val/`` (or ``test/``) class folders when ``data.root`` is set; unlabelled lists are
evaluated on ``data.eval_root`` like unlabelled folders.
"""

from __future__ import annotations

from pathlib import Path

from nbr_contrast.data.folders import TEST_FOLDERS, FolderSource, PathSource, read_class_list
from nbr_contrast.data.image_source import DataSourceError

SETTING = "data.train_list"


def read_list(path: str | Path) -> list[tuple[int, Path, str | None]]:
    """``(line number, image path, class name or None)`` of every entry of a list file.

    Raises:
        DataSourceError: If the file is missing or not text, has a line with more than two
            tab-separated fields, lists nothing or names a missing image.
    """
    listing = Path(path)
    if not listing.is_file():
        raise DataSourceError(f"{SETTING}={str(listing)!r} does not exist.")
    try:
        text = listing.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataSourceError(
            f"{SETTING}={str(listing)!r} is not a text file (byte {err.start} is not UTF-8); "
            "give a list of image paths, one per line, optionally a tab and a class name."
        ) from err
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) > 2:
            raise DataSourceError(
                f"{SETTING}={str(listing)!r} line {number} has {len(fields)} tab-separated "
                "fields; a line is an image path, optionally a tab and one class name."
            )
        name, label = fields[0], fields[1] if len(fields) == 2 else ""
        entries.append((number, listing.parent / name.strip(), label.strip() or None))
    if not entries:
        raise DataSourceError(f"{SETTING}={str(listing)!r} lists no image.")
    missing = [(n, p) for n, p, _ in entries if not p.is_file()]
    if missing:
        number, image = missing[0]
        raise DataSourceError(
            f"{SETTING}={str(listing)!r} line {number}: image {str(image)!r} does not exist "
            f"({len(missing)} of {len(entries)} listed images missing); paths are relative to "
            "the list file's folder, or absolute."
        )
    return entries


def _class_names(used: set[str], class_list: str | None) -> list[str]:
    if class_list is not None:
        names = read_class_list(class_list)
        unknown = sorted(used - set(names))
        if unknown:
            raise DataSourceError(
                f"{SETTING} uses {len(unknown)} class(es) that data.class_list={class_list!r} "
                f"does not list, e.g. {unknown[:3]}; add them or fix the list."
            )
        return names
    if all(name.isdigit() for name in used):
        return sorted(used, key=int)
    return sorted(used)


def list_sources(
    train_list: str, root: str | None, class_list: str | None, on_corrupt: str
) -> tuple[PathSource, PathSource | None]:
    """``(train, test)``: the listed images and, for a labelled list, ``root``'s test folder.

    Raises:
        DataSourceError: If the list is bad (:func:`read_list`), or ``data.root`` is set for an
            unlabelled list or lacks a ``val/`` (or ``test/``) folder.
    """
    entries = read_list(train_list)
    used = {label for _, _, label in entries if label is not None}
    names = _class_names(used, class_list) if used else []
    position = {name: i for i, name in enumerate(names)}
    labels = [-1 if label is None else position[label] for _, _, label in entries]
    folder = Path(train_list).parent
    train = PathSource(folder, [p for _, p, _ in entries], labels, names, on_corrupt)
    if root is None:
        return train, None
    if not used:
        raise DataSourceError(
            f"data.root={root!r} gives test images for a labelled {SETTING}, but this list has "
            "no labels; remove data.root (set data.eval_root to a labelled folder to evaluate)."
        )
    test_dir = next((Path(root) / n for n in TEST_FOLDERS if (Path(root) / n).is_dir()), None)
    if test_dir is None:
        raise DataSourceError(
            f"data.root={root!r} has no val/ (or test/) class folders for the test images of "
            f"{SETTING}; point data.root at a folder holding val/<class>/ or remove it."
        )
    return train, FolderSource(test_dir, names, on_corrupt)
