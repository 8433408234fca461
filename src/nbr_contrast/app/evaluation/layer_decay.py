"""Layer-wise learning-rate decay for fine-tuning ViTs (BEiT/MAE's ``param_groups_lrd``).

A ViT of ``L`` blocks is split in ``L + 2`` layers: the patch embedding, class token and
position embedding are layer 0, block ``i`` (0-based) is layer ``i + 1``, and what follows
the blocks (final norm, head) is layer ``L + 1``. Layer ``l`` trains at ``lr * decay ** (L +
1 - l)``, so the head keeps the full rate and the embedding the smallest. Blocks are found by
name in torchvision ViTs (``encoder.layers.encoder_layer_<i>``) and timm ViTs
(``blocks.<i>``); a backbone without such blocks (a ResNet) has one layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from torch import nn

BLOCK = re.compile(r"(?:^|\.)(?:encoder\.layers\.encoder_layer_|blocks\.)(\d+)\.")
EMBEDDING = (
    "conv_proj",
    "class_token",
    "encoder.pos_embedding",
    "patch_embed",
    "cls_token",
    "pos_embed",
    "reg_token",
)
NO_DECAY_NAMES = ("class_token", "pos_embedding", "cls_token", "pos_embed", "reg_token")


def num_blocks(backbone: nn.Module) -> int:
    """Number of ViT blocks :data:`BLOCK` finds in ``backbone`` (0 for other networks)."""
    found = {int(m.group(1)) for n, _ in backbone.named_parameters() if (m := BLOCK.search(n))}
    return max(found) + 1 if found else 0


def layer_id(name: str, blocks: int) -> int:
    """Layer of parameter ``name`` of a ViT backbone of ``blocks`` blocks (module doc)."""
    if (match := BLOCK.search(name)) is not None:
        return int(match.group(1)) + 1
    if name.startswith(EMBEDDING):
        return 0
    return blocks + 1


def decayed_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    blocks: int,
    decay: float,
    weight_decay: float,
) -> list[dict[str, Any]]:
    """Parameter groups with a ``lr_scale`` per layer and weight decay off for 1-D weights.

    Biases, norm weights, class token and position embeddings get no weight decay (as
    MAE's fine-tuning). The caller multiplies each group's ``lr_scale`` into its rate.

    Args:
        named_parameters: The backbone's parameters, named as in the backbone.
        blocks: Its number of ViT blocks (:func:`num_blocks`; 0 gives one group per decay).
        decay: Factor per layer (1 gives every layer the full rate).
        weight_decay: Weight decay of the other parameters.

    Returns:
        Groups for :class:`torch.optim.Optimizer`, empty ones left out.
    """
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        layer = layer_id(name, blocks) if blocks else 0
        exempt = param.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES
        group = groups.setdefault(
            (layer, exempt),
            {
                "params": [],
                "weight_decay": 0.0 if exempt else weight_decay,
                "lr_scale": decay ** (blocks + 1 - layer) if blocks else 1.0,
            },
        )
        group["params"].append(param)
    return list(groups.values())
