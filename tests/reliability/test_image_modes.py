"""Every image mode a folder can hold loads as the RGB picture it shows (16-bit scaled)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from nbr_contrast.data.folders import FolderSource
from nbr_contrast.data.image_source import to_rgb

# an 8x8 picture: a colour gradient, so every channel and level matters
_Y, _X = np.mgrid[0:8, 0:8]
REFERENCE = Image.fromarray(
    np.stack([_X * 32, _Y * 32, 255 - _X * 16 - _Y * 8], axis=-1).astype(np.uint8), "RGB"
)
GRAY = np.asarray(REFERENCE.convert("L"), dtype=np.float64)


def _lab(image: Image.Image) -> Image.Image:
    srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
    return ImageCms.applyTransform(image, ImageCms.buildTransform(srgb, lab, "RGB", "LAB"))


def _gray(values: np.ndarray, mode: str) -> Image.Image:
    if mode == "I;16B":
        return Image.frombytes(mode, (8, 8), values.astype(">u2").tobytes())
    return Image.fromarray(values, mode if mode != "I;16" else None)


# mode saved -> (file suffix, make the image from REFERENCE, expected RGB, tolerance)
COLOUR = np.asarray(REFERENCE, dtype=np.float64)
GRAY3 = np.repeat(GRAY[..., None], 3, axis=-1)
CASES: dict[str, tuple[str, Callable[[], Image.Image], np.ndarray, float]] = {
    "1": (".png", lambda: REFERENCE.convert("1"), None, 0.0),
    "L": (".png", lambda: REFERENCE.convert("L"), GRAY3, 0.0),
    "LA": (".png", lambda: REFERENCE.convert("LA"), GRAY3, 0.0),
    "P": (".png", lambda: REFERENCE.convert("P"), COLOUR, 40.0),
    "RGB": (".png", lambda: REFERENCE, COLOUR, 0.0),
    "RGBA": (".png", lambda: REFERENCE.convert("RGBA"), COLOUR, 0.0),
    "CMYK": (".tif", lambda: REFERENCE.convert("CMYK"), COLOUR, 1.0),
    "YCbCr": (".jpg", lambda: REFERENCE.convert("YCbCr"), COLOUR, 12.0),
    "LAB": (".tif", lambda: _lab(REFERENCE), COLOUR, 3.0),
    "I;16": (".png", lambda: _gray((GRAY * 257).astype(np.uint16), "I;16"), GRAY3, 0.5),
    "I;16B": (".tif", lambda: _gray((GRAY * 257).astype(np.uint16), "I;16B"), GRAY3, 0.5),
    "I": (".tif", lambda: _gray((GRAY * 257).astype(np.int32), "I"), GRAY3, 0.5),
    "F": (".tif", lambda: _gray((GRAY / 255).astype(np.float32), "F"), GRAY3, 0.5),
    "F 16-bit": (".tif", lambda: _gray((GRAY * 257).astype(np.float32), "F"), GRAY3, 0.5),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_folder_of_each_mode_loads_as_the_picture(name: str, tmp_path: Path) -> None:
    suffix, make, expected, tolerance = CASES[name]
    image = make()
    path = tmp_path / "cls" / f"img{suffix}"
    path.parent.mkdir()
    image.save(path)
    with Image.open(path) as saved:
        assert saved.mode == name.split()[0] or (name, saved.mode) == ("YCbCr", "RGB")
    loaded = FolderSource(tmp_path).get_image(0)
    assert loaded.mode == "RGB" and loaded.size == (8, 8)
    got = np.asarray(loaded, dtype=np.float64)
    if expected is None:  # 1-bit: each pixel black or white as stored
        expected = np.repeat(np.asarray(image.convert("L"), dtype=np.float64)[..., None], 3, -1)
    assert np.abs(got - expected).mean() <= tolerance


def test_palette_with_transparency_and_la_with_alpha_keep_their_colours() -> None:
    palette = REFERENCE.convert("P")
    palette.info["transparency"] = 0
    assert np.array_equal(np.asarray(to_rgb(palette)), np.asarray(palette.convert("RGB")))
    pa = REFERENCE.convert("PA")
    assert np.array_equal(np.asarray(to_rgb(pa)), np.asarray(pa.convert("RGB")))
