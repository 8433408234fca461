"""Batched view augmentation on the device the images live on.

:class:`GpuViews` turns a batch of ``uint8`` images into one normalised ``float32`` tensor per
:class:`~nbr_contrast.data.config.ViewConfig`, sampling from the same distributions as the
per-sample CPU pipeline in ``data/views.py``: crop, horizontal flip, colour jitter in a random
order, grayscale, Gaussian blur, solarisation and normalisation. Every op draws its per-sample
parameters in one batched call (:mod:`nbr_contrast.data.gpu_params`) and transforms the whole
batch at once (:mod:`nbr_contrast.data.gpu_ops`), so there is no Python loop over samples.

Two input contracts: one ``uint8`` batch of same-size images (in-memory sources such as
CIFAR), cropped on the device for every view; or one batch of tiles per view whose
random-resized crops were already cut from the full images in the loader workers
(:mod:`nbr_contrast.data.crops`, lazily decoded sources), which ``rrc`` views do not crop again.

Known differences from the CPU pipeline: the random-resized crop samples the source image
bilinearly without antialiasing (identical when the crop is upscaled, as on CIFAR-sized
images), and samples at the crop's edge are interpolated with the neighbouring source pixels
rather than replicated from the crop's own border.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from nbr_contrast.data import gpu_ops as ops
from nbr_contrast.data.config import CROP_KINDS, ViewConfig
from nbr_contrast.data.gpu_params import sample_view_params


def apply_view(
    images: Tensor, params: dict[str, Tensor], view: ViewConfig, mean: Tensor, std: Tensor
) -> Tensor:
    """Make one view of a ``uint8`` batch from drawn parameters.

    The parameters come from :func:`~nbr_contrast.data.gpu_params.sample_view_params`.

    Crop, flip, colour jitter, grayscale, blur, solarise and normalise, in that order. An
    ``rrc`` view without ``"boxes"`` (``cropped`` images, see
    :func:`~nbr_contrast.data.gpu_params.sample_view_params`)
    keeps the images' own framing. Has no randomness of its own, so it can be compiled
    (:class:`GpuViews` with ``compile=True``).

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
    if "boxes" in params:
        x = ops.apply_crops(x, params["boxes"], view.size)
    elif view.crop == "pad":
        x = ops.pad_crop(x, params["offsets"], view.size, view.pad)
    elif view.crop == "none":
        x = ops.resize(x, view.size)
    x = x.contiguous()
    if "flip" in params:
        x = ops.hflip(x, params["flip"])
    if "jitter" in params:
        x = ops.color_jitter(x, params["jitter_factors"], params["jitter_order"], params["jitter"])
    if "grayscale" in params:
        x = ops.grayscale(x, params["grayscale"])
    if "blur" in params:
        kernel = ops.blur_kernel_size(view.size)
        x = ops.gaussian_blur(x, params["blur_sigma"], kernel, params["blur"])
    if "solarize" in params:
        x = ops.solarize(x, view.solarize_threshold, params["solarize"])
    return ops.normalize(x, mean, std)


def random_view(
    images: Tensor, view: ViewConfig, mean: Tensor, std: Tensor, cropped: bool = False
) -> Tensor:
    """One view of a ``uint8`` batch with parameters from torch's global generator.

    :func:`~nbr_contrast.data.gpu_params.sample_view_params` followed by
    :func:`apply_view`, as one function so that
    compiling it also fuses the parameter sampling.

    Args:
        images: ``uint8`` RGB images ``[B, 3, H, W]``.
        view: The view's config.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        cropped: The images are this view's random-resized crops already.

    Returns:
        The normalised ``float32`` view ``[B, 3, size, size]``.
    """
    b, _, h, w = images.shape
    params = sample_view_params(view, b, h, w, None, images.device, cropped)
    return apply_view(images, params, view, mean, std)


class GpuViews(torch.nn.Module):
    """Make one augmented, normalised view per view config from ``uint8`` images.

    Views are :class:`~nbr_contrast.data.config.ViewConfig`.

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
        self.views = [
            cast(ViewConfig, OmegaConf.to_object(v)) if isinstance(v, DictConfig) else v
            for v in views
        ]
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
    def forward(
        self, images: Tensor | Sequence[Tensor], generator: torch.Generator | None = None
    ) -> list[Tensor]:
        """Augment a batch once per view.

        Args:
            images: ``uint8`` RGB images ``[B, 3, H, W]`` (any memory format), cropped for
                every view; or, pre-cropped (:mod:`nbr_contrast.data.crops`), one ``uint8``
                batch ``[B, 3, size, size]`` per view for the first ``len(images)`` views,
                whose ``rrc`` crops are not redone.
            generator: Source of randomness; the same seed gives the same views. ``None``
                uses torch's global generator of the images' device.

        Returns:
            One ``float32`` tensor ``[B, 3, size, size]`` per view (per given batch).

        Raises:
            ValueError: If ``images`` does not fit either contract.
        """
        cropped = not isinstance(images, Tensor)
        batches = [images] * len(self.views) if isinstance(images, Tensor) else list(images)
        if not 0 < len(batches) <= len(self.views):
            raise ValueError(f"got {len(batches)} batches of crops for {len(self.views)} views")
        pairs = list(zip(self.views[: len(batches)], batches, strict=True))
        for view, batch in pairs:
            _check(batch, view.size if cropped else None)
        if len({batch.shape[0] for batch in batches}) > 1:
            raise ValueError(f"batches of crops differ in length: {[len(b) for b in batches]}")
        if self.mean.device != batches[0].device:
            self.to(batches[0].device)
        mean, std = self.mean, self.std
        if self.compiled and generator is None:
            return [self.random_view(batch, view, mean, std, cropped) for view, batch in pairs]
        out = []
        for view, batch in pairs:
            b, _, h, w = batch.shape
            params = sample_view_params(view, b, h, w, generator, batch.device, cropped)
            out.append(self.apply_view(batch, params, view, mean, std))
        return out


def _check(images: Tensor, size: int | None) -> None:
    """Fail unless ``images`` is ``uint8 [B, 3, H, W]`` (with ``H = W = size`` if given)."""
    shape = tuple(images.shape)
    ok = images.dtype == torch.uint8 and images.dim() == 4 and shape[1] == 3
    if not ok or (size is not None and shape[2:] != (size, size)):
        want = "H, W" if size is None else f"{size}, {size}"
        raise ValueError(f"expected uint8 images [B, 3, {want}], got {images.dtype} {shape}")
