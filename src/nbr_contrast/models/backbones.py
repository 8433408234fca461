"""Backbone networks: torchvision ResNets (with the small-image stem) and small ViTs.

Every builder returns a module that maps images ``[B, 3, H, W]`` to features ``[B, F]``
and has an ``out_dim`` attribute. The modules are plain torchvision models with their
classifier replaced by ``nn.Identity``, so ``task=export`` writes a state dict that loads
into the torchvision constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from nbr_contrast.config import SMALL_IMAGE_MAX, BackboneConfig


@dataclass(frozen=True)
class VitSpec:
    """Constructor arguments of a torchvision ``VisionTransformer`` (besides size/patch)."""

    num_layers: int
    num_heads: int
    hidden_dim: int
    mlp_dim: int


VIT_SPECS: dict[str, VitSpec] = {
    "vit_tiny": VitSpec(num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768),
    "vit_small": VitSpec(num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536),
}
RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}
BACKBONES = (*RESNETS, *VIT_SPECS)


def uses_small_stem(cfg: BackboneConfig, image_size: int) -> bool:
    """Whether a ResNet gets the CIFAR stem (3x3 stride-1 conv, no max-pool)."""
    if cfg.small_stem is None:
        return image_size <= SMALL_IMAGE_MAX
    return bool(cfg.small_stem)


def build_backbone(cfg: BackboneConfig, image_size: int) -> nn.Module:
    """Build the backbone named by ``cfg.name`` for inputs of side ``image_size``.

    Args:
        cfg: Backbone config.
        image_size: Side length of the training images (picks the ResNet stem and the
            ViT position-embedding grid).

    Returns:
        A module with attribute ``out_dim`` (feature size) and ``arch`` (torchvision name).

    Raises:
        ValueError: For an unknown ``backbone.name`` (the message lists the valid ones).
    """
    if cfg.name in RESNETS:
        model = RESNETS[cfg.name](zero_init_residual=cfg.zero_init_residual)
        if uses_small_stem(cfg, image_size):
            model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        out_dim = model.fc.in_features
        model.fc = nn.Identity()
    elif cfg.name in VIT_SPECS:
        spec = VIT_SPECS[cfg.name]
        if image_size % cfg.patch_size:
            raise ValueError(
                f"backbone.patch_size={cfg.patch_size} does not divide the image size "
                f"{image_size}; choose a patch size that divides it."
            )
        model = torchvision.models.VisionTransformer(
            image_size=image_size,
            patch_size=cfg.patch_size,
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            hidden_dim=spec.hidden_dim,
            mlp_dim=spec.mlp_dim,
        )
        out_dim = spec.hidden_dim
        model.heads = nn.Identity()
    else:
        raise ValueError(
            f"Unknown backbone.name={cfg.name!r}. Valid choices: {', '.join(BACKBONES)}."
        )
    model.out_dim = out_dim
    model.arch = cfg.name
    return model


def feature_dim(model: nn.Module) -> int:
    """Feature size of a backbone built by :func:`build_backbone`."""
    return int(model.out_dim)


def forward_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run a backbone and return flat features ``[B, F]``."""
    return torch.flatten(model(images), 1)
