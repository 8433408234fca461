"""Batched view augmentation on the device the images live on.

:class:`GpuViews` turns a batch of ``uint8`` images into one normalised ``float32`` tensor per
:class:`~nbr_contrast.config.ViewConfig`, sampling from the same distributions as the
per-sample CPU pipeline in ``data/views.py``: crop, horizontal flip, colour jitter in a random
order, grayscale, Gaussian blur, solarisation and normalisation. Every op draws its per-sample
parameters in one batched call and transforms the whole batch at once, so there is no Python
loop over samples.

Each op is exposed as a pair of functions (a parameter sampler and an apply function taking
those parameters), so that each can be checked on hand-made images.

Random numbers come from ``generator`` when one is given (drawn on the generator's device and
moved to the images' device, so a CPU generator gives the same parameters whatever device the
images are on), else from torch's global generator of the images' device.

Known differences from the CPU pipeline: the random-resized crop samples the source image
bilinearly without antialiasing (identical when the crop is upscaled, as on CIFAR-sized
images), and samples at the crop's edge are interpolated with the neighbouring source pixels
rather than replicated from the crop's own border.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nbr_contrast.config import ViewConfig

CROP_KINDS = ("rrc", "pad", "none")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
CROP_TRIES = 10


def _uniform(
    shape: Sequence[int],
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device | str | None,
) -> Tensor:
    """Draw ``float32`` samples uniform in ``[low, high)``.

    Args:
        shape: Output shape.
        low: Lower bound.
        high: Upper bound.
        generator: Source of randomness; ``None`` uses the global generator of ``device``.
        device: Device of the returned tensor.

    Returns:
        The samples on ``device``.
    """
    draw_device = generator.device if generator is not None else device
    u = torch.rand(tuple(shape), generator=generator, device=draw_device)
    return (low + (high - low) * u).to(device)


def bernoulli_mask(
    b: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw one Bernoulli(``p``) decision per sample.

    Args:
        b: Batch size.
        p: Probability of ``True``.
        generator: Source of randomness (see the module docstring).
        device: Device of the returned mask.

    Returns:
        Boolean mask ``[B]``.
    """
    return _uniform((b,), 0.0, 1.0, generator, device) < p


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
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A small constant tensor, copied to ``device`` once and reused (never written to)."""
    return torch.tensor(values, device=device, dtype=dtype)


def _per_sample(values: Tensor) -> Tensor:
    """Reshape per-sample scalars ``[B]`` to broadcast over ``[B, C, H, W]``."""
    return values.view(-1, 1, 1, 1)


# --------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------


def random_resized_crop_params(
    b: int,
    h: int,
    w: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample random-resized-crop boxes with torchvision's ``RandomResizedCrop`` distribution.

    For each sample, ten candidate boxes are drawn with an area fraction uniform in ``scale``
    and a log aspect ratio (width / height) uniform in ``log(ratio)``, their sides rounded to
    whole pixels; the first candidate that fits in the image is kept, with its top-left corner
    uniform over the valid positions. A sample with no fitting candidate falls back to the
    largest centred box whose aspect ratio is clamped to ``ratio``.

    Args:
        b: Batch size.
        h: Image height.
        w: Image width.
        scale: ``(min, max)`` area fraction.
        ratio: ``(min, max)`` aspect ratio.
        generator: Source of randomness (see the module docstring).
        device: Device of the returned boxes.

    Returns:
        ``int64`` boxes ``[B, 4]`` as ``(top, left, height, width)``.
    """
    area = float(h * w)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target_area = area * _uniform((b, CROP_TRIES), scale[0], scale[1], generator, device)
    aspect = torch.exp(_uniform((b, CROP_TRIES), log_lo, log_hi, generator, device))
    cand_w = torch.round(torch.sqrt(target_area * aspect)).long()
    cand_h = torch.round(torch.sqrt(target_area / aspect)).long()
    valid = (cand_w > 0) & (cand_w <= w) & (cand_h > 0) & (cand_h <= h)
    first = valid.int().argmax(dim=1, keepdim=True)
    found = valid.any(dim=1)

    in_ratio = w / h
    if in_ratio < min(ratio):
        fb_w, fb_h = w, round(w / min(ratio))
    elif in_ratio > max(ratio):
        fb_w, fb_h = round(h * max(ratio)), h
    else:
        fb_w, fb_h = w, h
    crop_h = torch.where(found, cand_h.gather(1, first).squeeze(1), fb_h)
    crop_w = torch.where(found, cand_w.gather(1, first).squeeze(1), fb_w)

    u = _uniform((b, 2), 0.0, 1.0, generator, device)
    top = torch.minimum((u[:, 0] * (h - crop_h + 1)).long(), h - crop_h)
    left = torch.minimum((u[:, 1] * (w - crop_w + 1)).long(), w - crop_w)
    top = torch.where(found, top, (h - crop_h) // 2)
    left = torch.where(found, left, (w - crop_w) // 2)
    return torch.stack([top, left, crop_h, crop_w], dim=1)


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


def pad_crop_params(
    b: int,
    h: int,
    w: int,
    size: int,
    pad: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample the top-left corners of ``size`` crops of the image zero-padded by ``pad``.

    Args:
        b: Batch size.
        h: Image height (before padding).
        w: Image width (before padding).
        size: Crop side length.
        pad: Padding on every side.
        generator: Source of randomness (see the module docstring).
        device: Device of the returned offsets.

    Returns:
        ``int64`` offsets ``[B, 2]`` as ``(top, left)`` in padded coordinates.

    Raises:
        ValueError: If the padded image is smaller than the crop.
    """
    span_h, span_w = h + 2 * pad - size + 1, w + 2 * pad - size + 1
    if span_h < 1 or span_w < 1:
        raise ValueError(f"a {size} px crop does not fit in a {h}x{w} image padded by {pad}")
    u = _uniform((b, 2), 0.0, 1.0, generator, device)
    top = torch.clamp((u[:, 0] * span_h).long(), max=span_h - 1)
    left = torch.clamp((u[:, 1] * span_w).long(), max=span_w - 1)
    return torch.stack([top, left], dim=1)


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
    n = _constant((5.0, 3.0, 1.0), images.device, images.dtype).view(3, 1, 1)
    k = torch.remainder(n + hue6.unsqueeze(-3), 6.0)
    ramp = torch.minimum(k, 4 - k).clamp_(0.0, 1.0)
    return (value.unsqueeze(-3) - chroma.unsqueeze(-3) * ramp).clamp_(0.0, 1.0)


JITTER_OPS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_hue,
)
"""The colour-jitter ops, indexed as in the columns of :func:`color_jitter_params`."""


def color_jitter_params(
    b: int,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample per-sample colour-jitter factors and op orders like torchvision's ``ColorJitter``.

    Brightness, contrast and saturation factors are uniform in ``[max(0, 1 - x), 1 + x]``; the
    hue shift is uniform in ``[-hue, hue]``. The order is a uniformly random permutation of the
    four ops per sample.

    Args:
        b: Batch size.
        brightness: Brightness strength.
        contrast: Contrast strength.
        saturation: Saturation strength.
        hue: Hue strength (at most 0.5).
        generator: Source of randomness (see the module docstring).
        device: Device of the returned tensors.

    Returns:
        ``(factors, order)``: factors ``[B, 4]`` (brightness, contrast, saturation, hue shift)
        and ``int64`` op indices into :data:`JITTER_OPS` ``[B, 4]`` in application order.

    Raises:
        ValueError: If a strength is negative or ``hue`` exceeds 0.5.
    """
    if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
        raise ValueError("jitter strengths must be non-negative and hue at most 0.5")
    ranges = [(max(0.0, 1 - s), 1 + s) for s in (brightness, contrast, saturation)]
    ranges.append((-hue, hue))
    u = _uniform((b, 4), 0.0, 1.0, generator, device)
    low = _constant(tuple(lo for lo, _ in ranges), u.device, u.dtype)
    high = _constant(tuple(hi for _, hi in ranges), u.device, u.dtype)
    factors = low + (high - low) * u
    order = _uniform((b, 4), 0.0, 1.0, generator, device).argsort(dim=1)
    return factors, order


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
        factors: Per-sample factors ``[B, 4]`` from :func:`color_jitter_params`.
        order: Per-sample op order ``[B, 4]`` from :func:`color_jitter_params`.
        mask: Boolean ``[B]`` of samples to jitter; ``None`` jitters all.

    Returns:
        Jittered images in [0, 1].
    """
    factors = factors.to(images.device, images.dtype)
    order = order.to(images.device)
    identity = _constant((1.0, 1.0, 1.0, 0.0), images.device, images.dtype)
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


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


def sample_view_params(
    view: ViewConfig,
    b: int,
    h: int,
    w: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Draw every random parameter of one view for a batch (see :func:`apply_view`).

    Args:
        view: The view's config.
        b: Batch size.
        h: Source image height.
        w: Source image width.
        generator: Source of randomness (see the module docstring).
        device: Device of the returned tensors.

    Returns:
        Named parameter tensors; ops whose probability is zero have none.
    """
    params: dict[str, Tensor] = {}
    if view.crop == "rrc":
        scale, ratio = tuple(view.crop_scale), tuple(view.crop_ratio)
        params["boxes"] = random_resized_crop_params(b, h, w, scale, ratio, generator, device)
    elif view.crop == "pad":
        params["offsets"] = pad_crop_params(b, h, w, view.size, view.pad, generator, device)
    if view.flip_p > 0:
        params["flip"] = bernoulli_mask(b, view.flip_p, generator, device)
    if view.jitter_p > 0:
        params["jitter"] = bernoulli_mask(b, view.jitter_p, generator, device)
        params["jitter_factors"], params["jitter_order"] = color_jitter_params(
            b, view.brightness, view.contrast, view.saturation, view.hue, generator, device
        )
    if view.grayscale_p > 0:
        params["grayscale"] = bernoulli_mask(b, view.grayscale_p, generator, device)
    if view.blur_p > 0:
        params["blur"] = bernoulli_mask(b, view.blur_p, generator, device)
        lo, hi = view.blur_sigma
        params["blur_sigma"] = _uniform((b,), lo, hi, generator, device)
    if view.solarize_p > 0:
        params["solarize"] = bernoulli_mask(b, view.solarize_p, generator, device)
    return params


def apply_view(
    images: Tensor, params: dict[str, Tensor], view: ViewConfig, mean: Tensor, std: Tensor
) -> Tensor:
    """Make one view of a ``uint8`` batch from parameters drawn by :func:`sample_view_params`.

    Crop, flip, colour jitter, grayscale, blur, solarise and normalise, in that order. Has no
    randomness of its own, so it can be compiled (:class:`GpuViews` with ``compile=True``).

    Args:
        images: ``uint8`` RGB images ``[B, 3, H, W]``.
        params: The view's parameters.
        view: The view's config.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.

    Returns:
        The normalised ``float32`` view ``[B, 3, size, size]``.
    """
    x = images.to(dtype=torch.float32, memory_format=torch.contiguous_format) / 255
    if view.crop == "rrc":
        x = apply_crops(x, params["boxes"], view.size)
    elif view.crop == "pad":
        x = pad_crop(x, params["offsets"], view.size, view.pad)
    else:
        x = resize(x, view.size)
    x = x.contiguous()
    if "flip" in params:
        x = hflip(x, params["flip"])
    if "jitter" in params:
        x = color_jitter(x, params["jitter_factors"], params["jitter_order"], params["jitter"])
    if "grayscale" in params:
        x = grayscale(x, params["grayscale"])
    if "blur" in params:
        kernel = blur_kernel_size(view.size)
        x = gaussian_blur(x, params["blur_sigma"], kernel, params["blur"])
    if "solarize" in params:
        x = solarize(x, view.solarize_threshold, params["solarize"])
    return normalize(x, mean, std)


def random_view(images: Tensor, view: ViewConfig, mean: Tensor, std: Tensor) -> Tensor:
    """One view of a ``uint8`` batch with parameters from torch's global generator.

    :func:`sample_view_params` followed by :func:`apply_view`, as one function so that
    compiling it also fuses the parameter sampling.

    Args:
        images: ``uint8`` RGB images ``[B, 3, H, W]``.
        view: The view's config.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.

    Returns:
        The normalised ``float32`` view ``[B, 3, size, size]``.
    """
    b, _, h, w = images.shape
    params = sample_view_params(view, b, h, w, None, images.device)
    return apply_view(images, params, view, mean, std)


class GpuViews(torch.nn.Module):
    """Make one augmented, normalised view per :class:`ViewConfig` from a ``uint8`` batch.

    Each view runs crop, flip, colour jitter, grayscale, blur, solarise and normalise; ops
    whose probability is zero are skipped. In eager mode a view is a few hundred small ops,
    so on a GPU it is bound by kernel launches, not arithmetic. With ``compile=True`` each
    view config runs as one ``torch.compile``-d graph, fused into a few kernels: parameter
    sampling and transform together when drawing from torch's global generator (training),
    the transform alone when a ``generator`` is passed (its draws stay eager, so a seed
    gives the same parameters as in eager mode).

    Args:
        views: One config per view (dataclasses or structured ``DictConfig`` nodes).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        compile: Compile the views (the first batch of each view config pays the
            compilation). With a ``generator``, same views as eager mode up to rounding;
            without one, the compiled graph draws its own random numbers (same distributions,
            different stream from eager mode, deterministic under ``torch.manual_seed``).

    Raises:
        ValueError: If a view has an unknown crop kind or there are no views.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self, views: list[ViewConfig], mean: list[float], std: list[float], compile: bool = False
    ) -> None:
        super().__init__()
        if not views:
            raise ValueError("GpuViews needs at least one view")
        for view in views:
            if view.crop not in CROP_KINDS:
                raise ValueError(f"unknown crop {view.crop!r}; expected one of {CROP_KINDS}")
        self.views = [OmegaConf.to_object(v) if isinstance(v, DictConfig) else v for v in views]
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32), False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32), False)
        self.compiled = compile
        self.apply_view: Callable[..., Tensor] = (
            torch.compile(apply_view, fullgraph=True, dynamic=False) if compile else apply_view
        )
        self.random_view: Callable[..., Tensor] = (
            torch.compile(random_view, fullgraph=True, dynamic=False) if compile else random_view
        )

    @torch.no_grad()
    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """Augment a batch once per view.

        Args:
            images: ``uint8`` RGB images ``[B, 3, H, W]`` (any memory format).
            generator: Source of randomness; the same seed gives the same views. ``None``
                uses torch's global generator of the images' device.

        Returns:
            One ``float32`` tensor ``[B, 3, size, size]`` per view.

        Raises:
            ValueError: If ``images`` is not a ``uint8`` ``[B, 3, H, W]`` tensor.
        """
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected uint8 images [B, 3, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        b, _, h, w = images.shape
        if self.mean.device != images.device:
            self.to(images.device)
        mean, std = self.mean, self.std
        if self.compiled and generator is None:
            return [self.random_view(images, view, mean, std) for view in self.views]
        out = []
        for view in self.views:
            params = sample_view_params(view, b, h, w, generator, images.device)
            out.append(self.apply_view(images, params, view, mean, std))
        return out
