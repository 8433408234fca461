"""Rebuild a model that ``task=export`` wrote, from its weights file and the recipe beside it.

An export is a weights file (``<name>.safetensors`` or ``<name>.pth``; a renamed ``.pt``
works too) and its recipe ``<name>.json``, whose ``family`` says what to build: a torchvision
ResNet (``resnet``, with the small-image stem when ``small_stem``) or ViT (``vit``), a timm
model (``timm``), the user's module (``custom``) or a projection head (``projector``).
``hubconf.py`` at the repository root loads exports through :func:`load_exported`, so this
module imports only torch and torchvision at the top; timm, safetensors and a custom
backbone's package are imported when an export needs them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torchvision
from torch import nn

from nbr_contrast.models.heads import MLPHead
from nbr_contrast.models.stem import apply_small_stem
from nbr_contrast.models.weights import read_state_dict, state_mismatch

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
KINDS = ("backbone", "projector")


def recipe_path(weights: str | Path) -> Path:
    """The recipe JSON of the weights file ``weights``: the same name with ``.json``."""
    return Path(weights).with_suffix(".json")


def _timm_model(arch: str, args: Mapping[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError as error:
        raise ImportError(
            f"This export is the timm model {arch!r}: pip install 'nbr-contrast[timm]'."
        ) from error
    model = timm.create_model(arch, **args)
    model.out_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return model


def _custom_model(args: Mapping[str, Any], feature_dim: int) -> nn.Module:
    kwargs = {key: value for key, value in args.items() if key != "_target_"}
    module, _, name = str(args["_target_"]).rpartition(".")
    model = getattr(importlib.import_module(module), name)(**kwargs)
    model.out_dim = feature_dim
    return model


def build_from_recipe(meta: Mapping[str, Any]) -> nn.Module:
    """The bare model (random weights) that an export's recipe describes.

    Args:
        meta: The recipe JSON: ``family`` and ``arch`` plus ``small_stem``, ``vit_args``,
            ``timm_args``, ``custom_args`` or ``projector_args`` as the family needs.

    Returns:
        The model, with its feature (or output) size as ``out_dim``.

    Raises:
        ValueError: For an unknown ``family``.
        ImportError: For a timm export without timm installed.
    """
    family = meta.get("family")
    model: nn.Module
    if family == "resnet":
        model = torchvision.models.get_model(str(meta["arch"]))
        out_dim = int(model.fc.in_features)
        if meta["small_stem"]:
            apply_small_stem(model)
        model.fc = nn.Identity()
        model.out_dim = out_dim
    elif family == "vit":
        model = torchvision.models.VisionTransformer(**meta["vit_args"])
        model.heads = nn.Identity()
        model.out_dim = int(meta["vit_args"]["hidden_dim"])
    elif family == "timm":
        model = _timm_model(str(meta["arch"]), meta["timm_args"])
        if meta["small_stem"]:
            apply_small_stem(model)
    elif family == "custom":
        model = _custom_model(meta["custom_args"], int(meta["feature_dim"]))
    elif family == "projector":
        model = MLPHead(**meta["projector_args"])
    else:
        raise ValueError(
            f"family={family!r} is not one task=export writes (resnet, vit, timm, custom, "
            "projector)."
        )
    return model


def _read_recipe(path: Path, kind: str) -> dict[str, Any]:
    recipe = recipe_path(path)
    if not recipe.is_file():
        raise FileNotFoundError(
            f"weights={path} has no recipe {recipe.name} beside it; keep the JSON that "
            "task=export wrote next to the weights file."
        )
    try:
        meta = json.loads(recipe.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{recipe} is not a task=export recipe (invalid JSON: {error})."
        ) from error
    if not isinstance(meta, dict) or "family" not in meta:
        raise ValueError(f"{recipe} is not a task=export recipe (no 'family').")
    holds = "projector" if meta["family"] == "projector" else "backbone"
    if holds != kind:
        raise ValueError(f"weights={path} holds a {holds}; load it with the {holds!r} entry.")
    return meta


def load_exported(weights: str | Path, kind: str = "backbone") -> nn.Module:
    """The exported model in ``weights``, rebuilt from its recipe, in eval mode.

    Args:
        weights: A ``.safetensors``, ``.pth`` or ``.pt`` file ``task=export`` wrote; its
            recipe ``<name>.json`` must lie beside it.
        kind: ``"backbone"`` (images to features) or ``"projector"`` (features to
            embeddings).

    Returns:
        The model with the exported weights loaded strictly, in eval mode.

    Raises:
        FileNotFoundError: When the weights file or its recipe is missing.
        ValueError: For another file type, an unreadable file, a recipe of the other kind,
            or weights that do not fit the recipe's model.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(KINDS)}.")
    path = Path(weights).expanduser()
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(
            f"weights={path} is not a {', '.join(WEIGHT_SUFFIXES)} file; pass the weights "
            "file task=export wrote (e.g. resnet18_backbone.safetensors)."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={path} does not exist; pass the weights file task=export wrote."
        )
    meta = _read_recipe(path, kind)
    model = build_from_recipe(meta)
    try:
        state = read_state_dict(path)
    except Exception as error:
        reason = (str(error).splitlines() or [""])[0]
        raise ValueError(
            f"weights={path} is not a state-dict file ({type(error).__name__}: {reason})."
        ) from error
    mismatch = state_mismatch(state, model)
    if mismatch:
        raise ValueError(
            f"weights={path} does not fit the {meta['family']} model of {recipe_path(path).name}: "
            f"{mismatch}."
        )
    model.load_state_dict(state, strict=True)
    return model.eval()
