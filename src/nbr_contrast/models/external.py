"""Backbones from outside the package: timm models and a user's own module.

``backbone=timm backbone.name=convnext_tiny`` builds ``timm.create_model(name,
num_classes=0, ...)`` (pooled features, no classifier); ``backbone=custom
backbone._target_=my.module.Net`` builds ``my.module.Net(**backbone.kwargs)``. Each
records on the module what rebuilds it (``build_args``), so ``task=export`` can write a
loading recipe.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nbr_contrast.models.backbone_config import BackboneConfig
from nbr_contrast.models.stem import apply_small_stem, has_resnet_stem, uses_small_stem

IMG_SIZE_ERROR = "unexpected keyword argument 'img_size'"


def constructor_kwargs(cfg: BackboneConfig) -> dict[str, Any]:
    """``backbone.kwargs`` as a plain dict."""
    kwargs = cfg.kwargs
    if isinstance(kwargs, DictConfig):
        return OmegaConf.to_container(kwargs, resolve=True)  # type: ignore[return-value]
    return dict(kwargs or {})


def _create_timm(name: str, kwargs: dict[str, Any], image_size: int) -> tuple[nn.Module, dict]:
    """``timm.create_model``, with ``img_size`` when the model takes one (ViTs and kin)."""
    try:
        import timm
    except ImportError as error:
        raise ImportError(
            "backbone=timm needs the timm package: pip install 'nbr-contrast[timm]'."
        ) from error
    if not timm.is_model(name):
        raise ValueError(
            f"backbone.name={name!r} is not a timm model; timm.list_models('*{name[:6]}*') "
            "lists similar names."
        )
    args = {"num_classes": 0, "img_size": image_size, **kwargs}
    try:
        return timm.create_model(name, **args), args
    except TypeError as error:
        if IMG_SIZE_ERROR not in str(error) or "img_size" in kwargs:
            raise _unusable_kwargs(name, kwargs, error) from error
    del args["img_size"]
    try:
        return timm.create_model(name, **args), args
    except TypeError as error:
        raise _unusable_kwargs(name, kwargs, error) from error


def _unusable_kwargs(name: str, kwargs: dict[str, Any], error: TypeError) -> ValueError:
    return ValueError(
        f"backbone.name={name} cannot be built with backbone.kwargs={kwargs} ({error}); "
        "remove or correct them."
    )


def build_timm(cfg: BackboneConfig, image_size: int) -> nn.Module:
    """``timm.create_model(cfg.name, num_classes=0, ...)`` for images of side ``image_size``.

    ``img_size`` is passed to models that take it; ``backbone.kwargs`` go to the
    constructor; ``backbone.drop_path_rate`` sets stochastic depth. A model with a ResNet
    stem gets the small-image stem as torchvision's ResNets do.

    Raises:
        ImportError: When timm is not installed.
        ValueError: For a name timm does not know, or ``small_stem=true`` on a model
            without a ResNet stem.
    """
    kwargs = constructor_kwargs(cfg)
    drop_path = {"drop_path_rate": float(cfg.drop_path_rate)} if cfg.drop_path_rate else {}
    model, args = _create_timm(cfg.name, {**kwargs, **drop_path}, image_size)
    args.pop("drop_path_rate", None)
    if uses_small_stem(cfg, image_size):
        if has_resnet_stem(model):
            apply_small_stem(model)
        elif cfg.small_stem:
            raise ValueError(
                f"backbone.small_stem=true but timm model {cfg.name!r} has no ResNet stem "
                "(conv1 and maxpool); set backbone.small_stem=null."
            )
    model.build_args = args
    model.out_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return model


def timm_classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of a timm model's classifier (``pretrained_cfg["classifier"]``)."""
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    return tuple(f"{name}." for name in ([names] if isinstance(names, str) else names))


def detect_dim(model: nn.Module, image_size: int) -> int:
    """Feature size of ``model``: its ``out_dim`` or ``num_features``, else a dry forward.

    The dry forward runs two blank images of side ``image_size`` in eval mode.

    Raises:
        ValueError: When the output is not a tensor ``[2, ...]`` (features per image).
    """
    for attr in ("out_dim", "num_features"):
        if isinstance(getattr(model, attr, None), int):
            return int(getattr(model, attr))
    training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, image_size, image_size))
    model.train(training)
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"backbone {type(model).__name__} must map images [B, 3, H, W] to "
            f"features [B, F] (or [B, ...], flattened); two {image_size} px images gave {shape}."
        )
    return int(torch.flatten(out, 1).shape[1])


def build_custom(cfg: BackboneConfig, image_size: int) -> nn.Module:
    """The user's module: ``cfg._target_`` called with ``backbone.kwargs``.

    Raises:
        ValueError: When ``_target_`` is unset or cannot be imported, does not take
            ``backbone.kwargs``, or the module's output is not per-image features.
    """
    target = cfg._target_
    if not target:
        raise ValueError(
            "backbone=custom needs backbone._target_=<dotted path of your nn.Module class>."
        )
    try:
        from hydra.utils import get_object  # plain training loops need no Hydra

        factory = get_object(str(target))
    except Exception as error:
        lines = [line.strip().rstrip(":") for line in str(error).splitlines() if line.strip()]
        reason = "; ".join(lines[:2]) or type(error).__name__
        raise ValueError(f"backbone._target_={target} cannot be imported ({reason}).") from error
    kwargs = constructor_kwargs(cfg)
    try:
        model = factory(**kwargs)
    except TypeError as error:
        raise ValueError(
            f"backbone._target_={target} cannot be built with backbone.kwargs={kwargs} "
            f"({error}); set its arguments with +backbone.kwargs.<name>=<value>."
        ) from error
    if not isinstance(model, nn.Module):
        raise ValueError(f"backbone._target_={target} made a {type(model).__name__}, not a module.")
    model.out_dim = detect_dim(model, image_size)
    model.build_args = {"_target_": str(target), **kwargs}
    return model
