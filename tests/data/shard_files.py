"""Tiny WebDataset shards written with the ``webdataset`` library's own ``TarWriter``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

FORMATS = {"png": "PNG", "webp": "WEBP", "jpg": "JPEG", "jpeg": "JPEG"}


def encoded(number: int, key: str, size: int = 12) -> bytes:
    """An image with red ``number % 256`` and green ``number // 256`` (exact but in JPEG)."""
    pixels = np.zeros((size, size + number % 3, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1] = number % 256, number // 256
    buffer = io.BytesIO()
    options = {"lossless": True} if key == "webp" else {"quality": 100}
    Image.fromarray(pixels).save(buffer, format=FORMATS[key], **options)
    return buffer.getvalue()


def number_of(image: Image.Image) -> int:
    """The ``number`` :func:`encoded` wrote into ``image``."""
    red, green = np.asarray(image)[0, 0, :2].tolist()
    return int(red) + 256 * int(green)


def write_shards(
    folder: Path,
    counts: Sequence[int],
    labelled: bool = True,
    classes: int = 3,
    keys: Sequence[str] = ("png",),
) -> str:
    """Shards ``folder/train-{000000..}.tar`` holding ``counts[j]`` samples each.

    Sample ``n`` (counted across shards) has key ``s<n>``, an image encoding ``n`` under
    ``keys[n % len(keys)]`` and, when ``labelled``, ``cls = n % classes``. Every shard also
    holds a sample without an image (a ``txt`` only), which readers pass over.

    Returns:
        The brace pattern of the shards.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for j, count in enumerate(counts):
        with wds.TarWriter(str(folder / f"train-{j:06d}.tar")) as writer:
            for _ in range(count):
                key = keys[n % len(keys)]
                sample: dict[str, object] = {"__key__": f"s{n:05d}", key: encoded(n, key)}
                if labelled:
                    sample["cls"] = n % classes
                writer.write(sample)
                n += 1
            writer.write({"__key__": f"note{j}", "txt": "no image here"})
    return str(folder / f"train-{{000000..{len(counts) - 1:06d}}}.tar")
