"""What every image source is: the :class:`ImageSource` interface and its in-memory kind.

A source maps a dataset index ``i`` to an RGB :class:`PIL.Image.Image` and a class label.
:class:`ArraySource` holds every image in memory and also hands them out as one ``uint8``
array (for the GPU pipeline). :func:`to_rgb` turns any decoded image into RGB, and
:class:`DataSourceError` is what every source raises for a failure the user can fix from
the config.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from PIL import Image

ON_CORRUPT = ("fail", "skip")
DECODE_ERRORS = (OSError, ValueError, SyntaxError)
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

    16-bit and float grayscale images are scaled to 8 bits, not
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


def check_on_corrupt(on_corrupt: str) -> None:
    """Fail on a ``data.on_corrupt`` value other than ``fail`` or ``skip``."""
    if on_corrupt not in ON_CORRUPT:
        raise DataSourceError(f"data.on_corrupt={on_corrupt!r} is not one of {ON_CORRUPT}.")


def warn_skipped(skipped: int, where: object) -> None:
    """Warn that ``skipped`` corrupt images in ``where`` were dropped (if any)."""
    if skipped:
        warnings.warn(
            f"skipped {skipped} corrupt image(s) in {where} (data.on_corrupt=skip)", stacklevel=3
        )


class ImageSource(ABC):
    """A labelled set of RGB images addressed by dataset index (a map-style dataset).

    Attributes:
        labels: Class index of every image, ``int64`` ``[N]``.
        classes: Class names; ``labels`` index into this list.
    """

    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        """``(image, label)`` of image ``i`` (label ``-1`` where unknown): a map-style dataset."""
        return self.get_image(i), int(self.labels[i])

    @abstractmethod
    def get_image(self, i: int) -> Image.Image:
        """Return image ``i`` in RGB mode.

        Args:
            i: Dataset index in ``[0, len(self))``.

        Returns:
            The image.
        """

    @contextmanager
    def open_image(self, i: int) -> Iterator[Image.Image]:
        """Open image ``i`` for a single use, possibly not yet decoded.

        A source that reads files yields the opened file, so the caller can still ask for a
        reduced-size decode (Pillow's ``draft``) before decoding it (e.g. with :func:`to_rgb`);
        the default yields :meth:`get_image`.

        Args:
            i: Dataset index in ``[0, len(self))``.

        Yields:
            The image, valid inside the ``with`` block.
        """
        yield self.get_image(i)

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
