"""Projection and prediction heads: MLPs with batch norm, as the papers specify them."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLPHead(nn.Sequential):
    """``Linear → BN → ReLU`` blocks ending in a linear layer (optionally followed by BN).

    Args:
        in_dim: Input size.
        hidden_dims: Sizes of the hidden layers (each followed by BN and ReLU).
        out_dim: Output size.
        last_bn: Put a BatchNorm after the output layer (NNCLR, SimCLR v2 style).
        last_bn_affine: Whether that last BN has a learnable affine (MoCo v3 uses none).
        hidden_bn: Put BatchNorm after the hidden layers (MoCo v2's head has none).
        last_bias: Give the output layer a bias (``None``: exactly when no BN follows it;
            MoCo v3's heads have no bias on any linear layer).

    Attributes:
        out_dim: Output size.
        build_args: These arguments, so ``MLPHead(**head.build_args)`` rebuilds the head
            (``task=export task.projector=true`` writes them to its recipe).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        last_bn: bool = False,
        last_bn_affine: bool = True,
        hidden_bn: bool = True,
        last_bias: bool | None = None,
    ) -> None:
        layers: list[nn.Module] = []
        dim = in_dim
        for hidden in hidden_dims:
            if hidden_bn:
                layers += [nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden)]
            else:
                layers.append(nn.Linear(dim, hidden))
            layers.append(nn.ReLU())
            dim = hidden
        bias = not last_bn if last_bias is None else last_bias
        layers.append(nn.Linear(dim, out_dim, bias=bias))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=last_bn_affine))
        super().__init__(*layers)
        self.out_dim = out_dim
        self.build_args = {
            "in_dim": int(in_dim),
            "hidden_dims": [int(h) for h in hidden_dims],
            "out_dim": int(out_dim),
            "last_bn": bool(last_bn),
            "last_bn_affine": bool(last_bn_affine),
            "hidden_bn": bool(hidden_bn),
            "last_bias": bool(bias),
        }
