"""NNCLR loss (Dwibedi et al., ICCV 2021, arXiv 2104.14548)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nnclr_loss(nn: Tensor, p: Tensor, temperature: float, positive_offset: int = 0) -> Tensor:
    """Nearest-neighbour InfoNCE, one view direction (the paper's n-way form).

    ::

        L_i = −log exp(NN(z_i)·p_{o+i}/τ) / Σ_k exp(NN(z_i)·p_k/τ),   L = mean_i L_i

    Rows are the anchors ``NN(z_i)`` of one view, columns the predictions ``p`` of the other
    view, possibly gathered from all ranks (``N = W·B``, gathered with
    :func:`nbr_contrast.utils.dist.gather_with_grad`); row ``i``'s positive is column
    ``o + i`` with ``o = positive_offset`` (``rank · B`` when gathered). Both sides are
    L2-normalised here. The paper stops the gradient through ``NN(z)``; this function does not
    detach ``nn`` — the caller passes a bank lookup (constant already) or, for the
    ``use_nn=false`` ablation, whatever it wants to back-propagate through. Symmetrising over
    the two views is the caller's job.

    Args:
        nn: Anchors ``NN(z)`` ``[B, D]``.
        p: Predictions of the other view ``[N, D]``, ``N ≥ positive_offset + B``.
        temperature: ``τ``.
        positive_offset: Column of row 0's positive.

    Returns:
        Scalar mean loss over the ``B`` rows.

    Raises:
        ValueError: If the positives ``[o, o + B)`` do not fit in the ``N`` columns.
    """
    b, n = nn.shape[0], p.shape[0]
    if positive_offset < 0 or positive_offset + b > n:
        raise ValueError(
            f"positive_offset={positive_offset} with {b} rows needs columns up to "
            f"{positive_offset + b}, but p has {n}"
        )
    logits = F.normalize(nn, dim=1) @ F.normalize(p, dim=1).T / temperature
    targets = torch.arange(positive_offset, positive_offset + b, device=nn.device)
    return F.cross_entropy(logits, targets)
