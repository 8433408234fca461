"""Backbone networks: torchvision ResNets and ViTs, timm models, a user's own module.

The timm and user modules are built in ``nbr_contrast.models.external``. Every builder
returns a module that maps images ``[B, 3, H, W]`` to features ``[B, F]`` and has the
attributes ``out_dim`` (feature size), ``arch`` (``backbone.name``) and ``source``
(``backbone.source``). The torchvision modules are plain torchvision models with their
classifier replaced by ``nn.Identity``, so ``task=export`` writes a state dict that loads
into the torchvision constructor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torchvision
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nbr_contrast.models.backbone_config import (
    BACKBONE_SOURCES,
    DEFAULT_IMAGE_SIZE,
    BackboneConfig,
    as_backbone_config,
)
from nbr_contrast.models.external import (
    build_custom,
    build_timm,
    detect_dim,
    timm_classifier_prefixes,
)
from nbr_contrast.models.stem import apply_small_stem, uses_small_stem
from nbr_contrast.models.weights import load_weights


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
CLASSIFIER_PREFIXES = ("fc.", "heads.")
"""Keys of the torchvision classifiers the backbones drop (``fc`` of ResNets, ``heads`` of ViTs)."""


def is_transformer(backbone: nn.Module) -> bool:
    """Whether ``backbone`` is a vision transformer (methods with ViT-specific heads ask).

    torchvision's ``VisionTransformer``, or any model with a ``patch_embed`` (timm's ViT,
    DeiT, BEiT, EVA, Swin families); convolutional networks (ResNet, ConvNeXt) are not.
    """
    return isinstance(backbone, torchvision.models.VisionTransformer) or hasattr(
        backbone, "patch_embed"
    )


def build_backbone(cfg: BackboneConfig | DictConfig, image_size: int) -> nn.Module:
    """Build the backbone ``cfg`` describes for inputs of side ``image_size``.

    Args:
        cfg: Backbone config.
        image_size: Side length of the training images (picks the ResNet stem and the
            ViT position-embedding grid).

    Returns:
        A module with attributes ``out_dim`` (feature size), ``arch`` (``cfg.name``) and
        ``source`` (``cfg.source``), with ``cfg.weights`` loaded when set.

    Raises:
        ValueError: For an unknown ``backbone.source`` or ``backbone.name`` (the message
            lists the valid ones), or a ``drop_path_rate`` or ``kwargs`` the backbone cannot
            take.
    """
    cfg = OmegaConf.merge(OmegaConf.structured(BackboneConfig), cfg)  # fields older runs lack
    if cfg.source not in BACKBONE_SOURCES:
        raise ValueError(
            f"Unknown backbone.source={cfg.source!r}. Valid choices: {', '.join(BACKBONE_SOURCES)}."
        )
    if cfg.drop_path_rate and cfg.source != "timm":
        raise ValueError(
            f"backbone.drop_path_rate={cfg.drop_path_rate} needs a timm backbone (backbone=timm); "
            "set it to 0."
        )
    if cfg.kwargs and cfg.source == "torchvision":
        raise ValueError(
            f"backbone.kwargs={dict(cfg.kwargs)} but backbone.name={cfg.name} is built by this "
            "project and takes no constructor arguments; pass them to backbone=timm or "
            "backbone=custom, or remove them."
        )
    classifier: tuple[str, ...] = ()
    if cfg.source == "timm":
        model = build_timm(cfg, image_size)
        classifier = timm_classifier_prefixes(model)
    elif cfg.source == "custom":
        model = build_custom(cfg, image_size)
    else:
        model = _build_torchvision(cfg, image_size)
        classifier = CLASSIFIER_PREFIXES
    model.arch = cfg.name
    model.source = cfg.source
    if cfg.weights is not None:
        load_weights(model, cfg.weights, classifier)
    return model


def _build_torchvision(cfg: BackboneConfig, image_size: int) -> nn.Module:
    """A torchvision ResNet or ViT without its classifier."""
    if cfg.name in RESNETS:
        model = RESNETS[cfg.name](zero_init_residual=cfg.zero_init_residual)
        if uses_small_stem(cfg, image_size):
            apply_small_stem(model)
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
            f"Unknown backbone.name={cfg.name!r}. Valid choices: {', '.join(BACKBONES)} "
            "(any timm model with backbone=timm)."
        )
    model.out_dim = out_dim
    return model


PROBE_SIZE = 64
"""Side of the blank images a module of unknown feature size is probed with."""


def resolve_backbone(
    backbone: nn.Module | str | BackboneConfig | Mapping[str, Any],
) -> tuple[nn.Module, BackboneConfig | None]:
    """The backbone module a method trains, and the config that rebuilds it.

    Args:
        backbone: A module mapping images ``[B, 3, H, W]`` to features ``[B, F]``, a
            torchvision name (``"resnet18"``), or a
            :class:`~nbr_contrast.models.backbone_config.BackboneConfig` (or a mapping of
            its fields).

    Returns:
        The module (with ``out_dim``, ``arch`` and ``source`` attributes) and the config
        with its ``image_size`` filled in, or ``None`` for a module passed in.

    Raises:
        ValueError: For an unknown name, or a module that still ends in its classifier.
        TypeError: For a value of another type.
    """
    if isinstance(backbone, nn.Module):
        return prepare_module(backbone), None
    spec = as_backbone_config(backbone)
    spec = replace(spec, image_size=int(spec.image_size or DEFAULT_IMAGE_SIZE))
    return build_backbone(spec, spec.image_size), spec


def prepare_module(model: nn.Module) -> nn.Module:
    """Check a user's backbone module and give it ``out_dim``, ``arch`` and ``source``.

    The feature size is its ``out_dim``, ``num_features`` or ``hidden_dim`` (torchvision
    ViTs) attribute, else the size of its output for two blank 64 px images.

    Raises:
        ValueError: When it is a torchvision ResNet or ViT that still has its classifier.
    """
    name = type(model).__name__
    if isinstance(model, torchvision.models.ResNet) and isinstance(model.fc, nn.Linear):
        raise ValueError(
            f"backbone is a torchvision {name} that still ends in its classifier (fc, "
            f"{model.fc.out_features} outputs); set backbone.fc = nn.Identity() so the method "
            f"trains on its {model.fc.in_features}-d features."
        )
    if isinstance(model, torchvision.models.VisionTransformer) and not isinstance(
        model.heads, nn.Identity
    ):
        raise ValueError(
            f"backbone is a torchvision {name} that still ends in its classifier (heads); set "
            "backbone.heads = nn.Identity() so the method trains on its features."
        )
    if not isinstance(getattr(model, "out_dim", None), int):
        size = next(
            (getattr(model, a) for a in ("num_features", "hidden_dim") if _is_int(model, a)),
            None,
        )
        model.out_dim = int(size) if size is not None else detect_dim(model, PROBE_SIZE)
    if not isinstance(getattr(model, "arch", None), str):
        model.arch = name.lower()
    if not isinstance(getattr(model, "source", None), str):
        model.source = "module"
    return model


def _is_int(model: nn.Module, attr: str) -> bool:
    return isinstance(getattr(model, attr, None), int) and not isinstance(
        getattr(model, attr), bool
    )


def feature_dim(model: nn.Module) -> int:
    """Feature size of a backbone built by :func:`build_backbone`."""
    return int(model.out_dim)


def forward_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run a backbone and return flat features ``[B, F]``."""
    return torch.flatten(model(images), 1)
