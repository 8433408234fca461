"""torch.hub entry points: a model that ``task=export`` wrote, rebuilt from its recipe.

Load with::

    model = torch.hub.load(
        "path/to/nbr_contrast", "backbone", weights="resnet18_backbone.safetensors",
        source="local",
    )

``weights`` is the exported ``.safetensors`` or ``.pth`` / ``.pt`` file; the recipe
(``resnet18_backbone.json``) must lie beside it. The model comes back in eval mode: a backbone
maps images ``[B, 3, H, W]`` to features ``[B, F]``, a projector (``"projector"``, from
``task.projector=true``) maps features to embeddings. The package is imported from this
clone's ``src`` (put first on ``sys.path``) unless it is already imported.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

dependencies = ["torch", "torchvision", "omegaconf", "safetensors"]


def _load(weights: str | Path, kind: str) -> nn.Module:
    if "nbr_contrast" not in sys.modules:  # this clone's code, not another installed version
        src = str(Path(__file__).resolve().parent / "src")
        if src not in sys.path:
            sys.path.insert(0, src)
    from nbr_contrast.models.rebuild import load_exported

    return load_exported(weights, kind)


def backbone(weights: str | Path) -> nn.Module:
    """The exported backbone in ``weights`` (images to features), in eval mode.

    Args:
        weights: The ``<arch>_backbone.safetensors`` (or ``.pth`` / ``.pt``) file that
            ``task=export`` wrote, with its ``<arch>_backbone.json`` beside it.
    """
    return _load(weights, "backbone")


def projector(weights: str | Path) -> nn.Module:
    """The exported projection head in ``weights`` (features to embeddings), in eval mode.

    Args:
        weights: The ``<arch>_projector.safetensors`` (or ``.pth`` / ``.pt``) file that
            ``task=export task.projector=true`` wrote, with its JSON beside it.
    """
    return _load(weights, "projector")
