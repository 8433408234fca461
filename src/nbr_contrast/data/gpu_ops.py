"""Batched image ops: each transforms a whole ``[B, C, H, W]`` batch with given parameters.

The deterministic half of the GPU view pipeline (:mod:`nbr_contrast.data.gpu_views`): crops,
flip, colour jitter, grayscale, Gaussian blur, solarisation and normalisation, each taking
per-sample parameters (drawn by :mod:`nbr_contrast.data.gpu_params`) or a per-sample
``mask`` of the samples to change, so each can be checked on hand-made images. None has
randomness of its own or a Python loop over samples.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _select(mask: Tensor | None, changed: Tensor, original: Tensor) -> Tensor:
    """Take ``changed`` for samples where ``mask`` is set and ``original`` elsewhere.

    Args:
        mask: Boolean ``[B]``, or ``None`` to take ``changed`` for every sample.
        changed: Transformed batch ``[B, ...]``.
        original: Untransformed batch of the same shape.

    Returns:
        The per-sample selection.
    """
    if mask is None:
        return changed
    return torch.where(mask.view(-1, *([1] * (changed.dim() - 1))), changed, original)


@lru_cache(maxsize=64)
def cached_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A small constant tensor, copied to ``device`` once and reused (never written to)."""
    return torch.tensor(values, device=device, dtype=dtype)


def _per_sample(values: Tensor) -> Tensor:
    """Reshape per-sample scalars ``[B]`` to broadcast over ``[B, C, H, W]``."""
    return values.view(-1, 1, 1, 1)


# --------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------


def apply_crops(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crop a box from each image and resize it to ``size`` in one bilinear resampling call.

    Each output pixel centre is mapped to its position inside its sample's box (the
    ``align_corners=False`` convention of a crop followed by a resize) and sampled bilinearly;
    positions past the image border take the border value.

    Args:
        images: Float images ``[B, C, H, W]``.
        boxes: Boxes ``[B, 4]`` as ``(top, left, height, width)`` in pixels.
        size: Output side length.

    Returns:
        Crops ``[B, C, size, size]``.
    """
    b, c, h, w = images.shape
    top, left, box_h, box_w = boxes.to(images.device, torch.float32).unbind(dim=1)
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=torch.float32)
    theta[:, 0, 0] = box_w / w
    theta[:, 0, 2] = (2 * left + box_w) / w - 1
    theta[:, 1, 1] = box_h / h
    theta[:, 1, 2] = (2 * top + box_h) / h - 1
    grid = F.affine_grid(theta.to(images.dtype), [b, c, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def pad_crop(images: Tensor, offsets: Tensor, size: int, pad: int) -> Tensor:
    """Zero-pad each image by ``pad`` and copy out a ``size`` square at its offset.

    Args:
        images: Images ``[B, C, H, W]`` (any dtype; pixels are copied exactly).
        offsets: ``(top, left)`` per sample ``[B, 2]`` in padded coordinates.
        size: Crop side length.
        pad: Padding on every side.

    Returns:
        Crops ``[B, C, size, size]``.
    """
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = offsets.to(images.device)
    steps = torch.arange(size, device=images.device)
    rows = (offsets[:, 0:1] + steps)[:, :, None]
    cols = (offsets[:, 1:2] + steps)[:, None, :]
    batch = torch.arange(images.shape[0], device=images.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)


def resize(images: Tensor, size: int) -> Tensor:
    """Resize every image to ``size`` x ``size`` (bilinear, antialiased when downscaling).

    Args:
        images: Float images ``[B, C, H, W]``.
        size: Output side length.

    Returns:
        Resized images ``[B, C, size, size]``.
    """
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


# --------------------------------------------------------------------------------------------
# Geometric and colour ops (float images in [0, 1])
# --------------------------------------------------------------------------------------------


def hflip(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Flip the selected images left to right.

    Args:
        images: Images ``[B, C, H, W]``.
        mask: Boolean ``[B]`` of samples to flip; ``None`` flips all.

    Returns:
        The batch with the selected images flipped.
    """
    return _select(mask, images.flip(-1), images)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma of RGB images.

    Args:
        images: RGB images ``[B, 3, H, W]``.

    Returns:
        Luma ``[B, 1, H, W]``.
    """
    r, g, b = images.unbind(dim=-3)
    return (LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b).unsqueeze(-3)


def grayscale(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Replace the selected images by their luma replicated to three channels.

    Args:
        images: RGB images ``[B, 3, H, W]``.
        mask: Boolean ``[B]`` of samples to convert; ``None`` converts all.

    Returns:
        The batch with the selected images in grayscale.
    """
    return _select(mask, rgb_to_grayscale(images).expand_as(images), images)


def _blend(first: Tensor, second: Tensor, factors: Tensor) -> Tensor:
    """Per-sample ``factor * first + (1 - factor) * second``, clamped to [0, 1]."""
    f = _per_sample(factors.to(first.dtype))
    return (f * first).add_((1 - f) * second).clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factors: Tensor) -> Tensor:
    """Scale pixels by a per-sample factor, clamped to [0, 1].

    Args:
        images: Images ``[B, C, H, W]`` in [0, 1].
        factors: Brightness factors ``[B]`` (1 keeps the image).

    Returns:
        Adjusted images.
    """
    return (images * _per_sample(factors.to(images.dtype))).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factors: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale version.

    Args:
        images: RGB images ``[B, 3, H, W]`` in [0, 1].
        factors: Contrast factors ``[B]`` (1 keeps the image, 0 gives a flat grey image).

    Returns:
        Adjusted images.
    """
    mean = rgb_to_grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factors)


def adjust_saturation(images: Tensor, factors: Tensor) -> Tensor:
    """Blend each image with its grayscale version.

    Args:
        images: RGB images ``[B, 3, H, W]`` in [0, 1].
        factors: Saturation factors ``[B]`` (1 keeps the image, 0 gives grayscale).

    Returns:
        Adjusted images.
    """
    return _blend(images, rgb_to_grayscale(images), factors)


def adjust_hue(images: Tensor, shifts: Tensor) -> Tensor:
    """Rotate the hue of each image by a per-sample shift in HSV space.

    With value ``v`` (largest channel), chroma ``c`` (largest minus smallest channel) and hue
    ``h`` in turns, the rotated channel ``n`` (5 for red, 3 for green, 1 for blue) is
    ``v - c * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 (h + shift)) mod 6``; saturation
    and value are unchanged.

    Args:
        images: RGB images ``[B, 3, H, W]`` in [0, 1].
        shifts: Hue shifts ``[B]`` in turns, within [-0.5, 0.5] (0.5 maps red to cyan).

    Returns:
        Adjusted images, clamped to [0, 1].
    """
    r, g, b = images.unbind(dim=-3)
    value, argmax = images.max(dim=-3)
    chroma = value - images.amin(dim=-3)
    safe_chroma = torch.where(chroma > 0, chroma, 1.0)
    hue6 = torch.where(
        argmax == 0,
        (g - b) / safe_chroma,
        torch.where(argmax == 1, (b - r) / safe_chroma + 2, (r - g) / safe_chroma + 4),
    )
    hue6 = hue6 + 6 * shifts.to(images.dtype).view(-1, 1, 1)
    n = cached_constant((5.0, 3.0, 1.0), images.device, images.dtype).view(3, 1, 1)
    k = torch.remainder(n + hue6.unsqueeze(-3), 6.0)
    ramp = torch.minimum(k, 4 - k).clamp_(0.0, 1.0)
    return (value.unsqueeze(-3) - chroma.unsqueeze(-3) * ramp).clamp_(0.0, 1.0)


JITTER_OPS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_hue,
)
"""The colour-jitter ops, indexed as the columns of ``gpu_params.color_jitter_params``."""


def color_jitter(
    images: Tensor, factors: Tensor, order: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Apply the four colour-jitter ops to each sample in its own order.

    Runs four rounds; in round ``r`` every op is computed for the whole batch and each sample
    keeps the result of its own ``order[:, r]`` op. Samples that skip an op in a round get the
    identity factor for brightness, contrast and saturation (which leaves them exactly
    unchanged) and their previous value for hue.

    Args:
        images: RGB images ``[B, 3, H, W]`` in [0, 1].
        factors: Per-sample factors ``[B, 4]`` from
            :func:`~nbr_contrast.data.gpu_params.color_jitter_params`.
        order: Per-sample op order ``[B, 4]``, from the same.
        mask: Boolean ``[B]`` of samples to jitter; ``None`` jitters all.

    Returns:
        Jittered images in [0, 1].
    """
    factors = factors.to(images.device, images.dtype)
    order = order.to(images.device)
    identity = cached_constant((1.0, 1.0, 1.0, 0.0), images.device, images.dtype)
    out = images
    for step in range(order.shape[1]):
        chosen = order[:, step, None] == torch.arange(len(JITTER_OPS), device=images.device)
        if mask is not None:
            chosen = chosen & mask[:, None]
        step_factors = torch.where(chosen, factors, identity)
        out = adjust_brightness(out, step_factors[:, 0])
        out = adjust_contrast(out, step_factors[:, 1])
        out = adjust_saturation(out, step_factors[:, 2])
        out = _select(chosen[:, 3], adjust_hue(out, step_factors[:, 3]), out)
    return out


def blur_kernel_size(size: int) -> int:
    """Gaussian-blur kernel side for ``size`` px images: 10% of the size, odd, at least 3.

    Args:
        size: Image side length.

    Returns:
        The kernel size.
    """
    return max(3, int(0.1 * size) | 1)


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels, one per sample.

    Args:
        sigma: Standard deviations ``[B]`` in pixels.
        kernel_size: Odd kernel length.

    Returns:
        Kernels ``[B, kernel_size]`` summing to 1.
    """
    half = (kernel_size - 1) / 2
    taps = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    weights = torch.exp(-0.5 * (taps / sigma[:, None]) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


def gaussian_blur(
    images: Tensor, sigma: Tensor, kernel_size: int, mask: Tensor | None = None
) -> Tensor:
    """Blur each image with its own Gaussian, as two separable grouped convolutions.

    Args:
        images: Images ``[B, C, H, W]``.
        sigma: Per-sample standard deviations ``[B]`` in pixels.
        kernel_size: Odd kernel length (reflect padding keeps the size).
        mask: Boolean ``[B]`` of samples to blur; ``None`` blurs all.

    Returns:
        The batch with the selected images blurred.
    """
    b, c, h, w = images.shape
    kernels = gaussian_kernels(sigma.to(images.device, images.dtype), kernel_size)
    kernels = kernels.repeat_interleave(c, dim=0)
    half = kernel_size // 2
    x = images.reshape(1, b * c, h, w)
    x = F.conv2d(
        F.pad(x, (half, half, 0, 0), mode="reflect"), kernels[:, None, None, :], groups=b * c
    )
    x = F.conv2d(
        F.pad(x, (0, 0, half, half), mode="reflect"), kernels[:, None, :, None], groups=b * c
    )
    return _select(mask, x.reshape(b, c, h, w), images)


def solarize(images: Tensor, threshold: float, mask: Tensor | None = None) -> Tensor:
    """Invert pixels at or above ``threshold`` (``x -> 1 - x``) in the selected images.

    Args:
        images: Images ``[B, C, H, W]`` in [0, 1].
        threshold: Threshold in [0, 1].
        mask: Boolean ``[B]`` of samples to solarise; ``None`` solarises all.

    Returns:
        The batch with the selected images solarised.
    """
    inverted = torch.where(images >= threshold, 1 - images, images)
    return _select(mask, inverted, images)


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Subtract the per-channel mean and divide by the per-channel standard deviation.

    Args:
        images: Images ``[B, C, H, W]``.
        mean: Per-channel mean ``[C]``.
        std: Per-channel standard deviation ``[C]``.

    Returns:
        Normalised images.
    """
    mean = mean.to(images.device, images.dtype).view(-1, 1, 1)
    std = std.to(images.device, images.dtype).view(-1, 1, 1)
    return (images - mean) / std
