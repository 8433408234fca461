"""Export a backbone as a plain state dict plus a JSON loading recipe.

The ``.pth`` file holds only a ``dict[str, Tensor]`` (loadable with
``torch.load(path, weights_only=True)``); its keys are exactly those of the torchvision
model minus the classifier (``fc.*`` for ResNets, ``heads.*`` for ViTs), of the timm model
made with ``num_classes=0``, or of the user's module. The sidecar
``<path>.json`` names the architecture and holds ``load_instructions``, a Python snippet
that rebuilds the model and loads the weights strictly:

ResNet (``small_stem`` true adds the second line)::

    model = torchvision.models.resnet18()
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.load_state_dict(torch.load("resnet18_backbone.pth", weights_only=True), strict=True)

ViT (constructor arguments stored under ``vit_args``)::

    model = torchvision.models.VisionTransformer(**vit_args)
    model.heads = nn.Identity()
    model.load_state_dict(torch.load("vit_tiny_backbone.pth", weights_only=True), strict=True)

timm (``create_model`` arguments stored under ``timm_args``; ``small_stem`` true adds the
second line)::

    model = timm.create_model("resnet18", num_classes=0)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); model.maxpool = nn.Identity()
    model.load_state_dict(torch.load("resnet18_backbone.pth", weights_only=True), strict=True)

A user's module (``backbone._target_`` and ``backbone.kwargs`` stored under ``custom_args``)::

    from my.module import Net
    model = Net(width=64)
    model.load_state_dict(torch.load("custom_backbone.pth", weights_only=True), strict=True)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torchvision
from hydra.utils import get_object
from torch import nn

from nbr_contrast.models.backbones import CLASSIFIER_PREFIXES
from nbr_contrast.models.stem import apply_small_stem, has_small_stem, small_stem_recipe
from nbr_contrast.models.weights import state_mismatch

SMALL_STEM_RECIPE = small_stem_recipe()
LOAD_LINE = "model.load_state_dict(torch.load({!r}, weights_only=True), strict=True)"


def _vit_args(model: torchvision.models.VisionTransformer) -> dict[str, int]:
    """Constructor arguments that rebuild ``model``'s architecture."""
    layers = model.encoder.layers
    return {
        "image_size": int(model.image_size),
        "patch_size": int(model.patch_size),
        "num_layers": len(layers),
        "num_heads": int(layers[0].self_attention.num_heads),
        "hidden_dim": int(model.hidden_dim),
        "mlp_dim": int(model.mlp_dim),
    }


def _resnet_recipe(arch: str, small_stem: bool, filename: str) -> tuple[nn.Module, str, int]:
    """The bare reference model, the snippet that prepares and loads it, the feature size."""
    names = torchvision.models.list_models(module=torchvision.models)
    resnet_module = torchvision.models.resnet.__name__
    if arch not in names or torchvision.models.get_model_builder(arch).__module__ != resnet_module:
        raise ValueError(
            f"arch={arch!r} is not a torchvision ResNet builder name (e.g. 'resnet18')."
        )
    model = torchvision.models.get_model(arch)
    feature_dim = int(model.fc.in_features)
    lines = [
        "import torch, torchvision",
        "from torch import nn",
        f"model = torchvision.models.{arch}()",
    ]
    if small_stem:
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
        lines.append(SMALL_STEM_RECIPE)
    model.fc = nn.Identity()
    lines.append("model.fc = nn.Identity()")
    lines.append(LOAD_LINE.format(filename))
    return model, "\n".join(lines), feature_dim


def _vit_recipe(args: dict[str, int], filename: str) -> tuple[nn.Module, str]:
    """The bare reference ViT and the snippet that rebuilds and loads it."""
    model = torchvision.models.VisionTransformer(**args)
    model.heads = nn.Identity()
    kwargs = ", ".join(f"{key}={value}" for key, value in args.items())
    recipe = "\n".join(
        [
            "import torch, torchvision",
            "from torch import nn",
            f"model = torchvision.models.VisionTransformer({kwargs})",
            "model.heads = nn.Identity()",
            LOAD_LINE.format(filename),
        ]
    )
    return model, recipe


def _call(args: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in args.items())


def _timm_recipe(backbone: nn.Module, arch: str, filename: str) -> tuple[nn.Module, str]:
    """The bare reference timm model and the snippet that rebuilds and loads it."""
    import timm

    args = dict(backbone.build_args)
    model = timm.create_model(arch, **args)
    lines = ["import timm, torch", "from torch import nn"]
    lines.append(f"model = timm.create_model({arch!r}, {_call(args)})")
    if has_small_stem(backbone):
        apply_small_stem(model)
        lines.append(small_stem_recipe(model.conv1.in_channels, model.conv1.out_channels))
    lines.append(LOAD_LINE.format(filename))
    return model, "\n".join(lines)


def _custom_recipe(backbone: nn.Module, filename: str) -> tuple[nn.Module, str]:
    """A fresh instance of the user's module and the snippet that rebuilds and loads it."""
    kwargs = {k: v for k, v in backbone.build_args.items() if k != "_target_"}
    target = str(backbone.build_args["_target_"])
    module, _, name = target.rpartition(".")
    model = get_object(target)(**kwargs)
    recipe = "\n".join(
        [
            "import torch",
            f"from {module} import {name}",
            f"model = {name}({_call(kwargs)})",
            LOAD_LINE.format(filename),
        ]
    )
    return model, recipe


def export_backbone(backbone: nn.Module, path: str | Path, arch: str) -> dict[str, Any]:
    """Write ``backbone``'s weights as a plain state dict and a JSON loading recipe.

    Args:
        backbone: A torchvision ``ResNet`` (standard or small-image stem) or
            ``VisionTransformer``, whose classifier (``fc`` / ``heads``) is left out, or a
            timm or custom backbone made by
            :func:`~nbr_contrast.models.backbones.build_backbone` (``source`` attribute).
        path: Destination ``.pth`` file; the recipe goes to ``<path>.json``.
        arch: Architecture name. For ResNets it must be the torchvision builder name
            (``"resnet18"``, ...), for timm the ``timm.create_model`` name; for ViTs and
            custom modules it is informational (e.g. ``"vit_tiny"``).

    Returns:
        The metadata written to the JSON sidecar plus ``"metadata_path"``: ``arch``,
        ``family`` (``"resnet"``, ``"vit"``, ``"timm"`` or ``"custom"``), ``small_stem``,
        ``feature_dim``, ``vit_args`` / ``timm_args`` / ``custom_args`` (the constructor
        arguments), ``state_dict_file``, ``num_tensors`` and ``load_instructions``.

    Raises:
        ValueError: If the backbone is none of these, or its weights would not load
            strictly into the model the recipe builds.
    """
    path = Path(path)
    source = getattr(backbone, "source", "torchvision")
    state = {
        key: value.detach().cpu().clone()
        for key, value in backbone.state_dict().items()
        if source != "torchvision" or not key.startswith(CLASSIFIER_PREFIXES)
    }
    meta: dict[str, Any] = {"arch": arch}
    if source == "timm":
        reference, recipe = _timm_recipe(backbone, arch, path.name)
        meta.update(family="timm", small_stem=has_small_stem(backbone))
        meta.update(feature_dim=int(backbone.out_dim), timm_args=backbone.build_args)
    elif source == "custom":
        reference, recipe = _custom_recipe(backbone, path.name)
        meta.update(family="custom", small_stem=False, feature_dim=int(backbone.out_dim))
        meta.update(custom_args=backbone.build_args)
    elif isinstance(backbone, torchvision.models.ResNet):
        small_stem = has_small_stem(backbone)
        reference, recipe, dim = _resnet_recipe(arch, small_stem, path.name)
        meta.update(family="resnet", small_stem=small_stem, feature_dim=dim)
    elif isinstance(backbone, torchvision.models.VisionTransformer):
        args = _vit_args(backbone)
        reference, recipe = _vit_recipe(args, path.name)
        meta.update(family="vit", small_stem=False, feature_dim=args["hidden_dim"], vit_args=args)
    else:
        raise ValueError(
            f"export_backbone supports torchvision ResNet and VisionTransformer backbones and "
            f"those build_backbone makes from timm or a custom module, got "
            f"{type(backbone).__name__}."
        )
    mismatch = state_mismatch(state, reference)
    if mismatch:
        raise ValueError(f"The backbone does not match {source} arch={arch!r}: {mismatch}.")
    meta.update(
        state_dict_file=path.name,
        num_tensors=len(state),
        load_instructions=recipe,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    metadata_path = Path(f"{path}.json")
    metadata_path.write_text(json.dumps(meta, indent=2))
    return {**meta, "metadata_path": str(metadata_path)}
