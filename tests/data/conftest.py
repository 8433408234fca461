"""Fixtures for the data tests: tiny JPEG archives and image-folder trees built on the fly."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CORRUPT = b"this is not a JPEG file"


def jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_npz(
    path: Path, images: np.ndarray, labels: Sequence[int], corrupt: Sequence[int] = ()
) -> Path:
    """Write ``images`` as a JPEG archive, replacing the entries in ``corrupt`` by garbage."""
    blobs = [CORRUPT if i in corrupt else jpeg_bytes(img) for i, img in enumerate(images)]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    np.savez(
        path,
        jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8),
        offsets=offsets,
        labels=np.asarray(labels, dtype=np.uint8),
        classes=np.array(["a", "b", "c"]),
    )
    return path


@pytest.fixture
def npz_factory(tmp_path: Path) -> Callable[..., Path]:
    """``make(name, n=12, corrupt=())``: an archive of ``n`` 32x32 images, labels ``i % 3``."""

    def make(name: str = "train.npz", n: int = 12, corrupt: Sequence[int] = ()) -> Path:
        rng = np.random.default_rng(len(name) + n)
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        return write_npz(tmp_path / name, images, [i % 3 for i in range(n)], corrupt)

    return make


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """``root/{train,val}/{cat,dog,fish}`` with PNGs of mixed modes and sizes, plus a class list.

    ``train/cat`` holds an RGB, a grayscale (``L``, value 77) and an RGBA image; the other
    folders hold one or two RGB images. ``root/classes.txt`` lists ``dog`` then ``cat``.
    """
    root = tmp_path / "tree"
    layout = {
        "train/cat": [
            ("a.png", "RGB", (40, 30)),
            ("b.png", "L", (20, 20)),
            ("c.png", "RGBA", (24, 24)),
        ],
        "train/dog": [("a.png", "RGB", (32, 48)), ("b.jpg", "RGB", (32, 32))],
        "train/fish": [("a.png", "RGB", (16, 16))],
        "val/cat": [("a.png", "RGB", (32, 32))],
        "val/dog": [("a.png", "P", (32, 32))],
    }
    for folder, files in layout.items():
        (root / folder).mkdir(parents=True)
        for name, mode, size in files:
            Image.new(
                mode, size, color=77 if mode in ("L", "P") else (10, 200, 30, 128)[: len(mode)]
            ).save(root / folder / name)
    (root / "classes.txt").write_text("dog\ncat\n")
    return root


@pytest.fixture
def unlabelled_tree(tmp_path: Path) -> Callable[[bool], Path]:
    """``make(nested)``: a folder of 12 PNGs of mixed sizes and modes (RGB, RGBA, ``L``).

    Flat: every file in the folder itself. Nested: spread over sub-folders of depth one and
    two, which are not classes.
    """

    def make(nested: bool) -> Path:
        root = tmp_path / ("nested" if nested else "flat")
        modes = ("RGB", "RGBA", "L")
        for i in range(12):
            folder = (
                root / f"part{i % 2}" / (f"deep{i % 3}" if i % 4 == 0 else "") if nested else root
            )
            folder.mkdir(parents=True, exist_ok=True)
            mode = modes[i % 3]
            size = (12 + 4 * (i % 4), 16 + 2 * (i % 3))
            Image.new(
                mode, size, color=(40 + i, 90, 200, 255)[: len(mode)] if mode != "L" else 40 + i
            ).save(folder / f"img{i}.png")
        return root

    return make


def write_stl10(root: Path, counts: dict[str, int]) -> Path:
    """A tiny STL-10 copy in its binary format under ``root/stl10_binary``.

    ``counts`` gives the images of ``train``, ``test`` and ``unlabeled``. Image ``i`` of a
    part is filled with ``i`` in the red channel and its column index in the green one
    (written column-major, as the real files); labels are ``1 + i % 10``.
    """
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    column = np.broadcast_to(np.arange(96, dtype=np.uint8)[None, :], (96, 96))
    for part, n in counts.items():
        images = np.zeros((n, 96, 96, 3), dtype=np.uint8)
        images[..., 0] = np.arange(n, dtype=np.uint8)[:, None, None]
        images[..., 1] = column
        images.transpose(0, 3, 2, 1).tofile(folder / f"{part}_X.bin")
        if part != "unlabeled":
            (1 + np.arange(n) % 10).astype(np.uint8).tofile(folder / f"{part}_y.bin")
    return root
