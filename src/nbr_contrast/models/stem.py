"""The small-image (CIFAR) ResNet stem: a 3x3 stride-1 ``conv1`` and no ``maxpool``.

It applies to every model with a ResNet stem (a ``conv1`` convolution and a ``maxpool``):
torchvision's ResNets and timm's.
"""

from __future__ import annotations

from torch import nn

from nbr_contrast.data.config import SMALL_IMAGE_MAX
from nbr_contrast.models.backbone_config import BackboneConfig


def uses_small_stem(cfg: BackboneConfig, image_size: int) -> bool:
    """Whether a ResNet gets the CIFAR stem (3x3 stride-1 conv, no max-pool)."""
    if cfg.small_stem is None:
        return image_size <= SMALL_IMAGE_MAX
    return bool(cfg.small_stem)


def has_resnet_stem(model: nn.Module) -> bool:
    """Whether ``model`` has a ResNet stem: a ``conv1`` convolution and a ``maxpool``."""
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")


def apply_small_stem(model: nn.Module) -> None:
    """Replace ``model.conv1`` by a 3x3 stride-1 convolution and drop ``model.maxpool``."""
    conv: nn.Conv2d = model.conv1
    model.conv1 = nn.Conv2d(
        conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=False
    )
    model.maxpool = nn.Identity()


def has_small_stem(model: nn.Module) -> bool:
    """Whether ``model`` has the stem :func:`apply_small_stem` makes."""
    if not has_resnet_stem(model) or not isinstance(model.maxpool, nn.Identity):
        return False
    conv = model.conv1
    return (
        conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.bias is None
    )


def small_stem_recipe(in_channels: int = 3, out_channels: int = 64) -> str:
    """The line of a loading recipe that gives a bare model the small stem."""
    return (
        f"model.conv1 = nn.Conv2d({in_channels}, {out_channels}, 3, 1, 1, bias=False); "
        "model.maxpool = nn.Identity()"
    )
