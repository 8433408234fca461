"""How a backbone is described by name: :class:`BackboneConfig` (the ``backbone`` group's schema).

A method takes its backbone as an ``nn.Module`` or as such a description (or just its
name, ``"resnet18"``); the description is what a checkpoint records, so
``NNCLR.load_from_checkpoint(path)`` rebuilds a name-built backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

BACKBONE_SOURCES = ("torchvision", "timm", "custom")
"""The values of :attr:`BackboneConfig.source`."""

DEFAULT_IMAGE_SIZE = 32
"""Side of the images a backbone is built for when :attr:`BackboneConfig.image_size` is unset:
the CIFAR size every recipe of the project is written for."""


@dataclass
class BackboneConfig:
    """A backbone network by name.

    Attributes:
        source: ``torchvision`` (the built-in ResNets and ViTs), ``timm`` (any model of the
            optional ``timm`` package, by ``name``) or ``custom`` (the class ``_target_``).
        name: Model name: ``resnet18``, ``resnet34``, ``resnet50``, ``vit_tiny`` or
            ``vit_small`` for ``torchvision``; a ``timm.list_models()`` name for ``timm``;
            a label (file names of exports) for ``custom``.
        image_size: Side of the images the network is built for: it picks the ResNet stem
            (``small_stem=None``) and the ViT position grid. ``None``: 32 px
            (:data:`DEFAULT_IMAGE_SIZE`); the command line sets the data's view size.
        small_stem: Use the 3x3 stride-1 stem without max-pool (ResNets, also timm's).
            ``None`` picks it for inputs of 64 px or less.
        patch_size: Patch size of the ``torchvision`` ViTs (timm: ``kwargs.patch_size``).
        zero_init_residual: Zero-initialise the last BN of each residual block (``torchvision``
            ResNets; timm's take ``kwargs.zero_init_last``).
        drop_path_rate: Stochastic-depth rate (``timm`` only; 0: off).
        weights: Local state-dict file (``.pth``/``.pt``/``.bin`` or ``.safetensors``)
            loaded into the built backbone; classifier weights in it are ignored.
        kwargs: Extra constructor arguments: of ``timm.create_model`` (``timm``) or of the
            ``_target_`` class (``custom``).
        _target_: Dotted path of the user's module class or factory (``custom``).
    """

    source: str = "torchvision"
    name: str = "resnet18"
    image_size: int | None = None
    small_stem: bool | None = None
    patch_size: int = 4
    zero_init_residual: bool = False
    drop_path_rate: float = 0.0
    weights: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    _target_: str | None = None


def as_backbone_config(value: str | BackboneConfig | Any) -> BackboneConfig:
    """A :class:`BackboneConfig` from a name, a config or a mapping of its fields.

    Raises:
        ValueError: For a mapping with a key :class:`BackboneConfig` does not have.
        TypeError: For any other type.
    """
    if isinstance(value, BackboneConfig):
        return value
    if isinstance(value, str):
        return BackboneConfig(name=value)
    if hasattr(value, "keys"):
        valid = [f.name for f in fields(BackboneConfig)]
        unknown = sorted(set(value.keys()) - set(valid))
        if unknown:
            raise ValueError(
                f"backbone has unknown key(s) {unknown}; valid keys: {', '.join(valid)}."
            )
        return BackboneConfig(**dict(value))
    raise TypeError(
        f"backbone={type(value).__name__}: pass an nn.Module, a name such as 'resnet18', or "
        "a BackboneConfig."
    )
