"""Structured configs of the data: datasets and their views, and the image-size resolvers.

:class:`DataConfig` is the ``data`` group's schema, :class:`ViewConfig` one augmentation
pipeline; the OmegaConf resolvers ``nbr.if_small`` and ``nbr.scaled`` let view recipes in
``conf/views/`` follow the dataset's image size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

SMALL_IMAGE_MAX = 64
"""Images of at most this many pixels a side are small, as CIFAR's are. ResNets get the 3x3
stem, and view recipes take their small-image values (``${nbr.if_small:...}``)."""


def if_small(image_size: Any, small: Any, large: Any) -> Any:
    """``small`` for images of at most :data:`SMALL_IMAGE_MAX` px a side, else ``large``.

    Registered as the OmegaConf resolver ``nbr.if_small``: a view recipe in ``conf/views/``
    writes ``blur_p: ${nbr.if_small:${data.image_size},0.0,1.0}`` where the small-image
    (CIFAR) recipe and the large-image (ImageNet) recipe of its source differ.
    """
    return small if int(image_size) <= SMALL_IMAGE_MAX else large


def scaled(image_size: Any, factor: Any) -> int:
    """``round(image_size × factor)``: resolver ``nbr.scaled``, a view at a fraction of the size."""
    return max(1, round(int(image_size) * float(factor)))


OmegaConf.register_new_resolver("nbr.if_small", if_small, replace=True)
OmegaConf.register_new_resolver("nbr.scaled", scaled, replace=True)

CROP_KINDS = ("rrc", "pad", "none")
"""The values of :attr:`ViewConfig.crop`."""


@dataclass
class ViewConfig:
    """One augmentation pipeline that produces one view of an image.

    The same fields drive the CPU pipeline (``data/views.py``) and the GPU pipeline
    (``data/gpu_views.py``), so both sample from the same distributions.

    Attributes:
        size: Output side length in pixels.
        crop: ``"rrc"`` random-resized crop, ``"pad"`` pad-and-random-crop (CIFAR
            supervised recipe), or ``"none"`` (plain resize).
        crop_scale: Area fraction range of the random-resized crop.
        crop_ratio: Aspect-ratio range of the random-resized crop.
        pad: Padding in pixels for ``crop="pad"``.
        flip_p: Probability of a horizontal flip.
        jitter_p: Probability of applying colour jitter.
        brightness: Brightness jitter strength.
        contrast: Contrast jitter strength.
        saturation: Saturation jitter strength.
        hue: Hue jitter strength (at most 0.5).
        grayscale_p: Probability of converting to grayscale.
        blur_p: Probability of a Gaussian blur.
        blur_sigma: Range of the blur's standard deviation in pixels (drawn uniformly).
        solarize_p: Probability of solarisation.
        solarize_threshold: Solarisation threshold in [0, 1].
    """

    size: int = 32
    crop: str = "rrc"
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    pad: int = 4
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5


def _range_problem(view: Any, name: str, low: float, high: float | None) -> str | None:
    """Why the ``[lo, hi]`` range ``view.<name>`` cannot work, or ``None``."""
    pair = [float(v) for v in getattr(view, name)]
    if len(pair) != 2:
        return "must be a [low, high] pair"
    lo, hi = pair
    top = "" if high is None else f" <= {high:g}"
    if not (lo > low and lo <= hi and (high is None or hi <= high)):
        return f"must be {low:g} < low <= high{top}"
    return None


VIEW_RANGES: dict[str, tuple[float, float | None]] = {
    "crop_scale": (0.0, 1.0),
    "crop_ratio": (0.0, None),
    "blur_sigma": (0.0, None),
}
"""``[low, high]`` fields: the bound ``low`` stays under, and the one ``high`` stays within."""

VIEW_LIMITS: dict[str, tuple[float, float]] = {
    "pad": (0.0, float("inf")),
    "brightness": (0.0, float("inf")),
    "contrast": (0.0, float("inf")),
    "saturation": (0.0, float("inf")),
    "hue": (0.0, 0.5),
    "solarize_threshold": (0.0, 1.0),
}
"""Inclusive ranges of a view's numbers beyond the shared rules (sizes, probabilities)."""


def check_view(view: Any, setting: str) -> None:
    """Raise one line naming ``<setting>.<field>`` for a view field that cannot work.

    Checks the crop kind, the ``[low, high]`` ranges (``crop_scale`` within (0, 1],
    ``crop_ratio`` and ``blur_sigma`` positive) and the jitter, padding and solarisation
    limits; sizes and probabilities follow :mod:`nbr_contrast.utils.ranges` like every
    other number.

    Args:
        view: A :class:`ViewConfig` (or a config node with its fields).
        setting: How the caller names the view (``data.views[1]``).

    Raises:
        ValueError: Naming the field, its value and what it must be.
    """
    if view.crop not in CROP_KINDS:
        raise ValueError(
            f"{setting}.crop={view.crop!r} is unknown; valid: {', '.join(CROP_KINDS)}."
        )
    for name, (low, high) in VIEW_RANGES.items():
        problem = _range_problem(view, name, low, high)
        if problem:
            raise ValueError(f"{setting}.{name}={list(getattr(view, name))} {problem}.")
    for name, (low, high) in VIEW_LIMITS.items():
        value = float(getattr(view, name))
        if not low <= value <= high:
            bound = f">= {low:g}" if high == float("inf") else f"in [{low:g}, {high:g}]"
            raise ValueError(f"{setting}.{name}={value:g} must be {bound}.")


@dataclass
class DataConfig:
    """Dataset, views and loader settings.

    Attributes:
        name: Source kind: ``cifar10_mini`` (ships with the package), ``cifar10``,
            ``cifar100``, ``stl10``, ``imagefolder``, ``npz`` or ``webdataset``.
        root: Dataset folder (torchvision datasets, image folders).
        labels: Whether an image folder's images have labels: ``True`` (``train/`` and
            ``val/`` class folders), ``False`` (every image under ``root``, unlabelled) or
            ``None`` (detect: a folder without ``train/`` and ``val/`` is unlabelled, said
            in one line). For ``name=imagefolder``, and ``name=webdataset`` (``True``: every
            sample needs ``cls``; ``None``: ``cls`` where present).
        split: STL-10's training split: ``train`` (5,000 labelled images),
            ``train+unlabeled`` (plus the 100,000 unlabelled ones) or ``unlabeled``.
        eval_root: A labelled image folder (``train/`` and ``val/`` class folders) that
            evaluates a run on unlabelled training images: the kNN monitor and report
            classify its ``val/`` images against its ``train/`` images. Without it (or
            STL-10's labelled splits) unlabelled training runs with no monitoring.
        train_path: Training ``.npz`` file (``name=npz``).
        test_path: Test ``.npz`` file (``name=npz``).
        shards: WebDataset training shards (``name=webdataset``): a brace pattern such as
            ``/data/train-{000000..000099}.tar`` or a list of uncompressed ``.tar`` files.
        val_shards: Labelled test shards for labelled training shards (``name=webdataset``).
        train_list: Text file listing an image folder's training images (``name=imagefolder``),
            one path per line (relative to the file's folder, or absolute), each optionally
            followed by a tab and its class name.
        class_list: Optional text file with one class folder name per line, restricting an
            image folder to those classes (e.g. ImageNet-100).
        download: Let torchvision download the dataset when it is missing.
        num_classes: Number of classes (for probes and classifiers).
        image_size: Side length of evaluation images.
        eval_crop_pct: The evaluation transform resizes the shorter side to
            ``round(image_size / eval_crop_pct)`` and keeps the centre ``image_size`` square
            (ImageNet's resize 256, centre 224 is 0.875; 1 keeps the whole short side).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        batch_size: Per-device training batch size.
        eval_batch_size: Per-device batch size for validation and feature extraction.
        num_workers: Data loader worker processes.
        pipeline: ``cpu`` (per-sample transforms in loader workers), ``gpu`` (uint8 images
            augmented in batches on the device) or ``auto`` (GPU when training on a GPU).
        views: One pipeline per view.
        on_corrupt: ``fail`` or ``skip`` images that cannot be decoded.
    """

    name: str = "cifar10_mini"
    root: str | None = None
    labels: bool | None = None
    split: str = "train"
    eval_root: str | None = None
    train_path: str | None = None
    test_path: str | None = None
    shards: Any = None
    val_shards: Any = None
    train_list: str | None = None
    class_list: str | None = None
    download: bool = False
    num_classes: int = 10
    image_size: int = 32
    eval_crop_pct: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])
    std: list[float] = field(default_factory=lambda: [0.2470, 0.2435, 0.2616])
    batch_size: int = 256
    eval_batch_size: int = 512
    num_workers: int = 2
    pipeline: str = "auto"
    views: list[ViewConfig] = field(default_factory=lambda: [ViewConfig(), ViewConfig()])
    on_corrupt: str = "fail"
