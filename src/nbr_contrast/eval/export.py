"""Export a backbone as a plain torchvision state dict plus a JSON loading recipe.

The ``.pth`` file holds only a ``dict[str, Tensor]`` (loadable with
``torch.load(path, weights_only=True)``); its keys are exactly those of the torchvision
model minus the classifier (``fc.*`` for ResNets, ``heads.*`` for ViTs). The sidecar
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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

SMALL_STEM_RECIPE = (
    "model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); model.maxpool = nn.Identity()"
)
CLASSIFIER_PREFIXES = ("fc.", "heads.")


def _is_small_stem(model: torchvision.models.ResNet) -> bool:
    conv = model.conv1
    return (
        isinstance(model.maxpool, nn.Identity)
        and isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.bias is None
    )


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
    lines.append(f"model.load_state_dict(torch.load({filename!r}, weights_only=True), strict=True)")
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
            f"model.load_state_dict(torch.load({filename!r}, weights_only=True), strict=True)",
        ]
    )
    return model, recipe


def _check_matches(state: dict[str, Tensor], reference: nn.Module, arch: str) -> None:
    """Raise if ``state`` would not load strictly into ``reference``."""
    expected = {key: value.shape for key, value in reference.state_dict().items()}
    got = {key: value.shape for key, value in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        shapes = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise ValueError(
            f"The backbone does not match torchvision arch={arch!r}: missing keys {missing[:5]}, "
            f"unexpected keys {extra[:5]}, shape mismatches {shapes[:5]}."
        )


def export_backbone(backbone: nn.Module, path: str | Path, arch: str) -> dict[str, Any]:
    """Write ``backbone``'s weights as a torchvision state dict and a JSON loading recipe.

    Args:
        backbone: A torchvision ``ResNet`` (standard or small-image stem) or
            ``VisionTransformer``; its classifier (``fc`` / ``heads``) is left out.
        path: Destination ``.pth`` file; the recipe goes to ``<path>.json``.
        arch: Architecture name. For ResNets it must be the torchvision builder name
            (``"resnet18"``, ...); for ViTs it is informational (e.g. ``"vit_tiny"``).

    Returns:
        The metadata written to the JSON sidecar plus ``"metadata_path"``: ``arch``,
        ``family`` (``"resnet"`` or ``"vit"``), ``small_stem``, ``feature_dim``,
        ``vit_args`` (ViT only), ``state_dict_file``, ``num_tensors`` and
        ``load_instructions``.

    Raises:
        ValueError: If the backbone is neither a torchvision ResNet nor a ViT, or its
            weights would not load strictly into the torchvision model the recipe builds.
    """
    path = Path(path)
    state = {
        key: value.detach().cpu().clone()
        for key, value in backbone.state_dict().items()
        if not key.startswith(CLASSIFIER_PREFIXES)
    }
    meta: dict[str, Any] = {"arch": arch}
    if isinstance(backbone, torchvision.models.ResNet):
        small_stem = _is_small_stem(backbone)
        reference, recipe, dim = _resnet_recipe(arch, small_stem, path.name)
        meta.update(family="resnet", small_stem=small_stem, feature_dim=dim)
    elif isinstance(backbone, torchvision.models.VisionTransformer):
        args = _vit_args(backbone)
        reference, recipe = _vit_recipe(args, path.name)
        meta.update(family="vit", small_stem=False, feature_dim=args["hidden_dim"], vit_args=args)
    else:
        raise ValueError(
            f"export_backbone supports torchvision ResNet and VisionTransformer backbones, "
            f"got {type(backbone).__name__}."
        )
    _check_matches(state, reference, arch)
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
