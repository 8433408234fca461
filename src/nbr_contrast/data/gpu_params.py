"""Random parameters of the batched view ops, drawn for a whole batch at once.

Each sampler draws every sample's parameters of one op (crop boxes, flip masks, jitter
factors and orders, blur widths, ...) in one batched call, from the same distributions as
the per-sample CPU pipeline in ``data/views.py``; :func:`sample_view_params` draws all of
one view's. The ops that apply them are in :mod:`nbr_contrast.data.gpu_ops`.

Random numbers come from ``generator`` when one is given (drawn on the generator's device and
moved to the requested device, so a CPU generator gives the same parameters whatever device
the images are on), else from torch's global generator of that device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from nbr_contrast.data.config import ViewConfig
from nbr_contrast.data.gpu_ops import cached_constant

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
        and ``int64`` op indices ``[B, 4]`` into :data:`~nbr_contrast.data.gpu_ops.JITTER_OPS`,
        in application order.

    Raises:
        ValueError: If a strength is negative or ``hue`` exceeds 0.5.
    """
    if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
        raise ValueError("jitter strengths must be non-negative and hue at most 0.5")
    ranges = [(max(0.0, 1 - s), 1 + s) for s in (brightness, contrast, saturation)]
    ranges.append((-hue, hue))
    u = _uniform((b, 4), 0.0, 1.0, generator, device)
    low = cached_constant(tuple(lo for lo, _ in ranges), u.device, u.dtype)
    high = cached_constant(tuple(hi for _, hi in ranges), u.device, u.dtype)
    factors = low + (high - low) * u
    order = _uniform((b, 4), 0.0, 1.0, generator, device).argsort(dim=1)
    return factors, order


def sample_view_params(
    view: ViewConfig,
    b: int,
    h: int,
    w: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    cropped: bool = False,
) -> dict[str, Tensor]:
    """Draw every random parameter of one view for a batch.

    :func:`~nbr_contrast.data.gpu_views.apply_view` applies them.

    Args:
        view: The view's config.
        b: Batch size.
        h: Source image height.
        w: Source image width.
        generator: Source of randomness (see the module docstring).
        device: Device of the returned tensors.
        cropped: The images are this view's random-resized crops already
            (:mod:`nbr_contrast.data.crops`): draw no crop boxes.

    Returns:
        Named parameter tensors; ops whose probability is zero, and the crop of ``cropped``
        images, have none.
    """
    params: dict[str, Tensor] = {}
    if view.crop == "rrc" and not cropped:
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
