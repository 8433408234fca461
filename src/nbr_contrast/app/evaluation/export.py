"""Export a backbone (and on request its projection head) as weights plus a JSON recipe.

``task=export`` writes, for a backbone ``resnet18``, ``resnet18_backbone.pth`` (a plain
``dict[str, Tensor]``, loadable with ``torch.load(path, weights_only=True)``), the same
tensors as ``resnet18_backbone.safetensors``, and the recipe ``resnet18_backbone.json``; with
``task.projector=true`` also ``resnet18_projector.{pth,safetensors,json}``. The keys are
exactly those of the torchvision model minus the classifier (``fc.*`` for ResNets,
``heads.*`` for ViTs), of the timm model made with ``num_classes=0``, of the user's module,
or of :class:`~nbr_contrast.models.heads.MLPHead`.

The recipe names the architecture (``family``, ``arch`` and the constructor arguments) so
that :func:`nbr_contrast.models.rebuild.load_exported` and ``torch.hub.load`` (through the
repository's ``hubconf.py``) rebuild the model from the weights file alone. It also holds
three Python snippets: ``load_instructions`` (``torch.load`` of the ``.pth``),
``load_instructions_safetensors`` and ``hub_instructions``. For a ResNet (``small_stem``
true adds the second line)::

    model = torchvision.models.resnet18()
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.load_state_dict(torch.load("resnet18_backbone.pth", weights_only=True), strict=True)

ViT (constructor arguments stored under ``vit_args``)::

    model = torchvision.models.VisionTransformer(**vit_args)
    model.heads = nn.Identity()

timm (``create_model`` arguments stored under ``timm_args``; ``small_stem`` true adds the
second line)::

    model = timm.create_model("resnet18", num_classes=0)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); model.maxpool = nn.Identity()

A user's module (``backbone._target_`` and ``backbone.kwargs`` stored under ``custom_args``)::

    from my.module import Net
    model = Net(width=64)

The projector (``MLPHead`` arguments, its shape, stored under ``projector_args``)::

    from nbr_contrast.models.heads import MLPHead
    model = MLPHead(in_dim=512, hidden_dims=[2048], out_dim=256, ...)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors.torch import save_file
from torch import Tensor, nn

from nbr_contrast.models.backbones import CLASSIFIER_PREFIXES
from nbr_contrast.models.heads import MLPHead
from nbr_contrast.models.rebuild import build_from_recipe, recipe_path
from nbr_contrast.models.stem import has_small_stem, small_stem_recipe
from nbr_contrast.models.weights import state_mismatch

SMALL_STEM_RECIPE = small_stem_recipe()
TORCH_LOAD = "model.load_state_dict(torch.load({!r}, weights_only=True), strict=True)"
SAFETENSORS_LOAD = [
    "from safetensors.torch import load_file",
    "model.load_state_dict(load_file({!r}), strict=True)",
]
HUB_LOAD = (
    "import torch\nmodel = torch.hub.load('<clone of nbr_contrast>', {kind!r}, "
    "weights={name!r}, source='local')"
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


def _resnet_lines(arch: str, small_stem: bool) -> list[str]:
    """The recipe lines that build a torchvision ResNet backbone (without loading)."""
    names = torchvision.models.list_models(module=torchvision.models)
    resnet_module = torchvision.models.resnet.__name__
    if arch not in names or torchvision.models.get_model_builder(arch).__module__ != resnet_module:
        raise ValueError(
            f"arch={arch!r} is not a torchvision ResNet builder name (e.g. 'resnet18')."
        )
    lines = [
        "import torch, torchvision",
        "from torch import nn",
        f"model = torchvision.models.{arch}()",
    ]
    if small_stem:
        lines.append(SMALL_STEM_RECIPE)
    return [*lines, "model.fc = nn.Identity()"]


def _vit_lines(args: dict[str, int]) -> list[str]:
    """The recipe lines that build a torchvision ViT backbone."""
    return [
        "import torch, torchvision",
        "from torch import nn",
        f"model = torchvision.models.VisionTransformer({_call(args)})",
        "model.heads = nn.Identity()",
    ]


def _call(args: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in args.items())


def _timm_lines(backbone: nn.Module, arch: str) -> list[str]:
    """The recipe lines that build a timm backbone."""
    lines = ["import timm, torch", "from torch import nn"]
    lines.append(f"model = timm.create_model({arch!r}, {_call(backbone.build_args)})")
    if has_small_stem(backbone):
        conv: nn.Conv2d = backbone.conv1
        lines.append(small_stem_recipe(conv.in_channels, conv.out_channels))
    return lines


def _custom_lines(backbone: nn.Module) -> list[str]:
    """The recipe lines that build the user's module."""
    kwargs = {k: v for k, v in backbone.build_args.items() if k != "_target_"}
    module, _, name = str(backbone.build_args["_target_"]).rpartition(".")
    return ["import torch", f"from {module} import {name}", f"model = {name}({_call(kwargs)})"]


def _cpu_state(module: nn.Module, skip: tuple[str, ...] = ()) -> dict[str, Tensor]:
    return {
        key: value.detach().cpu().contiguous().clone()
        for key, value in module.state_dict().items()
        if not (skip and key.startswith(skip))
    }


def _write(
    state: dict[str, Tensor], meta: dict[str, Any], lines: list[str], path: Path
) -> dict[str, Any]:
    """Check ``state`` against the model the recipe rebuilds, then write the three files.

    Raises:
        ValueError: If ``state`` would not load strictly into that model.
    """
    reference = build_from_recipe(meta)
    mismatch = state_mismatch(state, reference)
    if mismatch:
        raise ValueError(
            f"The {meta['family']} weights do not match arch={meta['arch']!r}: {mismatch}."
        )
    tensors = path.with_suffix(".safetensors")
    kind = "projector" if meta["family"] == "projector" else "backbone"
    meta.update(
        feature_dim=int(reference.out_dim),
        state_dict_file=path.name,
        safetensors_file=tensors.name,
        num_tensors=len(state),
        load_instructions="\n".join([*lines, TORCH_LOAD.format(path.name)]),
        load_instructions_safetensors="\n".join(
            [*lines, SAFETENSORS_LOAD[0], SAFETENSORS_LOAD[1].format(tensors.name)]
        ),
        hub_instructions=HUB_LOAD.format(kind=kind, name=tensors.name),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    save_file(state, tensors)
    metadata_path = recipe_path(path)
    metadata_path.write_text(json.dumps(meta, indent=2))
    return {
        **meta,
        "path": str(path),
        "safetensors_path": str(tensors),
        "metadata_path": str(metadata_path),
    }


def export_backbone(backbone: nn.Module, path: str | Path, arch: str) -> dict[str, Any]:
    """Write ``backbone``'s weights (``.pth`` and ``.safetensors``) and its JSON recipe.

    Args:
        backbone: A torchvision ``ResNet`` (standard or small-image stem) or
            ``VisionTransformer``, whose classifier (``fc`` / ``heads``) is left out, or a
            timm or custom backbone made by
            :func:`~nbr_contrast.models.backbones.build_backbone` (``source`` attribute).
        path: Destination ``.pth`` file; the same name with ``.safetensors`` and ``.json``
            receives the other two.
        arch: Architecture name. For ResNets it must be the torchvision builder name
            (``"resnet18"``, ...), for timm the ``timm.create_model`` name; for ViTs and
            custom modules it is informational (e.g. ``"vit_tiny"``).

    Returns:
        The recipe written to the JSON plus ``"path"``, ``"safetensors_path"`` and
        ``"metadata_path"``. The recipe holds ``arch``, ``family`` (``"resnet"``,
        ``"vit"``, ``"timm"`` or ``"custom"``), ``small_stem``, ``feature_dim``,
        ``vit_args`` / ``timm_args`` / ``custom_args`` (the constructor arguments),
        ``state_dict_file``, ``safetensors_file``, ``num_tensors`` and the snippets.

    Raises:
        ValueError: If the backbone is none of these, or its weights would not load
            strictly into the model the recipe builds.
    """
    path = Path(path)
    source = getattr(backbone, "source", "torchvision")
    meta: dict[str, Any] = {"arch": arch}
    if source == "timm":
        lines = _timm_lines(backbone, arch)
        meta.update(family="timm", small_stem=has_small_stem(backbone))
        meta.update(timm_args=backbone.build_args)
    elif source == "custom":
        lines = _custom_lines(backbone)
        meta.update(family="custom", small_stem=False, feature_dim=int(backbone.out_dim))
        meta.update(custom_args=backbone.build_args)
    elif isinstance(backbone, torchvision.models.ResNet):
        small_stem = has_small_stem(backbone)
        lines = _resnet_lines(arch, small_stem)
        meta.update(family="resnet", small_stem=small_stem)
    elif isinstance(backbone, torchvision.models.VisionTransformer):
        args = _vit_args(backbone)
        lines = _vit_lines(args)
        meta.update(family="vit", small_stem=False, vit_args=args)
    else:
        raise ValueError(
            f"export_backbone supports torchvision ResNet and VisionTransformer backbones and "
            f"those build_backbone makes from timm or a custom module, got "
            f"{type(backbone).__name__}."
        )
    skip = CLASSIFIER_PREFIXES if source == "torchvision" else ()
    return _write(_cpu_state(backbone, skip), meta, lines, path)


def export_projector(head: MLPHead, path: str | Path) -> dict[str, Any]:
    """Write a projection head's weights (``.pth`` and ``.safetensors``) and its recipe.

    Args:
        head: The method's projector.
        path: Destination ``.pth`` file; the same name with ``.safetensors`` and ``.json``
            receives the other two.

    Returns:
        As :func:`export_backbone`, with ``family`` ``"projector"``, the head's shape under
        ``projector_args`` (:class:`~nbr_contrast.models.heads.MLPHead` arguments) and its
        output size as ``feature_dim``.
    """
    args = dict(head.build_args)
    lines = [
        "import torch",
        "from nbr_contrast.models.heads import MLPHead",
        f"model = MLPHead({_call(args)})",
    ]
    meta: dict[str, Any] = {"arch": "mlp_head", "family": "projector", "projector_args": args}
    return _write(_cpu_state(head), meta, lines, Path(path))


def export_method(
    method: nn.Module, output_dir: str | Path, projector: bool = False
) -> dict[str, Any]:
    """``task=export``: the method's backbone, and with ``projector`` its projector.

    Args:
        method: A trained method (its ``backbone`` and ``projector`` modules are used).
        output_dir: Folder receiving ``<arch>_backbone.*`` (and ``<arch>_projector.*``).
        projector: Also export the projection head (``task.projector``).

    Returns:
        :func:`export_backbone`'s result, plus ``"projector"`` (:func:`export_projector`'s)
        when asked, and ``"files"``: every file written.

    Raises:
        ValueError: For ``projector`` on a method without an ``MLPHead`` projector, or a
            backbone :func:`export_backbone` cannot export.
    """
    backbone: nn.Module = method.backbone
    arch = str(backbone.arch)
    head = getattr(method, "projector", None) if projector else None
    if projector and not isinstance(head, MLPHead):
        raise ValueError(
            f"task.projector=true but {type(method).__name__} has no MLPHead projector to "
            "export; drop task.projector."
        )
    out = Path(output_dir)
    result = export_backbone(backbone, out / f"{arch}_backbone.pth", arch)
    parts = [result]
    if isinstance(head, MLPHead):
        result["projector"] = export_projector(head, out / f"{arch}_projector.pth")
        parts.append(result["projector"])
    keys = ("path", "safetensors_path", "metadata_path")
    result["files"] = [part[key] for part in parts for key in keys]
    return result
