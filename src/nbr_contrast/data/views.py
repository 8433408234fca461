"""Per-sample CPU view augmentation with ``torchvision.transforms.v2``.

:func:`build_view_transform` turns one :class:`~nbr_contrast.data.config.ViewConfig` into a
transform from a PIL image (or a ``uint8`` ``[3, H, W]`` tensor) to a normalised ``float32``
``[3, size, size]`` tensor, in BYOL order: crop, flip, colour jitter, grayscale, blur,
solarise. The batched GPU pipeline (``data/gpu_views.py``) samples from the same
distributions. :class:`MultiView` applies several such transforms to one image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from nbr_contrast.data.config import CROP_KINDS, ViewConfig
from nbr_contrast.data.gpu_ops import blur_kernel_size

Transform = Callable[[Any], Tensor]


def _crop(view: ViewConfig) -> list[v2.Transform]:
    """The geometric ops of ``view`` (output ``size`` x ``size``)."""
    size = int(view.size)
    if view.crop == "rrc":
        return [
            v2.RandomResizedCrop(
                size,
                scale=tuple(view.crop_scale),
                ratio=tuple(view.crop_ratio),
                antialias=True,
            )
        ]
    if view.crop == "pad":
        return [v2.Resize(size, antialias=True), v2.RandomCrop(size, padding=int(view.pad))]
    if view.crop == "none":
        return [v2.Resize((size, size), antialias=True)]
    raise ValueError(f"data.views: unknown crop {view.crop!r}; valid: {CROP_KINDS}.")


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    """``uint8`` image → normalised ``float32`` plain tensor."""
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
        v2.ToPureTensor(),
    ]


def build_view_transform(
    view: ViewConfig, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """Build the CPU transform of one view.

    Ops whose probability is zero are left out.

    Args:
        view: The view's augmentation settings.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.

    Returns:
        A transform from a PIL image or ``uint8`` ``[3, H, W]`` tensor to a ``float32``
        ``[3, size, size]`` tensor.

    Raises:
        ValueError: If ``view.crop`` is unknown.
    """
    ops: list[v2.Transform] = [v2.ToImage(), *_crop(view)]
    if view.flip_p > 0:
        ops.append(v2.RandomHorizontalFlip(p=float(view.flip_p)))
    if view.jitter_p > 0:
        jitter = v2.ColorJitter(
            brightness=float(view.brightness),
            contrast=float(view.contrast),
            saturation=float(view.saturation),
            hue=float(view.hue),
        )
        ops.append(v2.RandomApply([jitter], p=float(view.jitter_p)))
    if view.grayscale_p > 0:
        ops.append(v2.RandomGrayscale(p=float(view.grayscale_p)))
    if view.blur_p > 0:
        blur = v2.GaussianBlur(
            blur_kernel_size(int(view.size)), sigma=tuple(float(s) for s in view.blur_sigma)
        )
        ops.append(v2.RandomApply([blur], p=float(view.blur_p)))
    if view.solarize_p > 0:
        threshold = float(view.solarize_threshold) * 255
        ops.append(v2.RandomSolarize(threshold, p=float(view.solarize_p)))
    return v2.Compose([*ops, *_finish(mean, std)])


def build_eval_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float = 1.0
) -> v2.Compose:
    """Build the un-augmented evaluation transform.

    The shorter side is resized to ``round(image_size / crop_pct)`` and the centre
    ``image_size`` square kept.

    Args:
        image_size: Output side length.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        crop_pct: Fraction of the resized short side that the centre crop keeps (ImageNet's
            resize 256, centre crop 224 is 0.875).

    Returns:
        A transform from a PIL image or ``uint8`` ``[3, H, W]`` tensor to a ``float32``
        ``[3, image_size, image_size]`` tensor.
    """
    size = int(image_size)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(round(size / crop_pct), antialias=True),
            v2.CenterCrop(size),
            *_finish(mean, std),
        ]
    )


class MultiView:
    """Apply several view transforms to one image.

    Args:
        transforms: One transform per view.

    Raises:
        ValueError: If ``transforms`` is empty.
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        if not transforms:
            raise ValueError("data.views is empty; configure at least one view.")
        self.transforms = list(transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __call__(self, image: Any) -> list[Tensor]:
        """Return one tensor per view of ``image``."""
        return [t(image) for t in self.transforms]


def build_multiview(
    views: Sequence[ViewConfig], mean: Sequence[float], std: Sequence[float]
) -> MultiView:
    """Build a :class:`MultiView` with one CPU transform per view config.

    Args:
        views: One config per view.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.

    Returns:
        The multi-view transform.

    Raises:
        ValueError: If ``views`` is empty or a crop kind is unknown.
    """
    return MultiView([build_view_transform(v, mean, std) for v in views])
