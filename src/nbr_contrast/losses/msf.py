"""MSF's mean-shift regression loss and its neighbour selection.

Koohpayegani, Tejankar, Pirsiavash. "Mean Shift for Self-Supervised Learning", ICCV 2021
(arXiv 2105.07269); official code UMBCvision/MSF ``train_msf.py`` (``MeanShift.forward``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def msf_loss(query: Tensor, neighbours: Tensor) -> Tensor:
    """Mean squared distance of each query to its target's neighbours.

    With ``q_i`` the L2-normalised prediction of the query view and ``b_i1..b_ik`` the
    L2-normalised memory entries nearest to the target ``t_i``::

        L = mean_i (1/k) Σ_j ‖q_i − b_ij‖² = mean_i (1/k) Σ_j (2 − 2·q_i·b_ij)

    ``k = 1`` with the target itself as the only neighbour is BYOL's loss (one direction).
    No gradient reaches the neighbours.

    Args:
        query: ``[B, D]`` L2-normalised predictions ``norm(h(g(f(x_q))))``.
        neighbours: ``[B, k, D]`` L2-normalised neighbours of each target.

    Returns:
        The scalar loss.
    """
    sims = torch.einsum("bd,bkd->bk", query, neighbours.detach())
    return (2.0 - 2.0 * sims).mean()


def msf_neighbours(
    targets: Tensor,
    bank_sims: Tensor,
    bank_neighbours: Tensor,
    batch_targets: Tensor,
) -> tuple[Tensor, Tensor]:
    """The ``k`` entries nearest to each target among the bank's top-k and the batch's targets.

    The official code enqueues the batch's targets before searching, so each target is its
    own nearest neighbour. Here the memory is the bank (its ``k`` best entries per target,
    ``bank_sims``/``bank_neighbours``, from any search backend) plus every target of the
    batch on all ranks (``batch_targets``); the top-``k`` of that union is exact and needs
    no copy of the bank.

    Args:
        targets: ``[B, D]`` L2-normalised targets of this rank.
        bank_sims: ``[B, k]`` cosine similarities of each target's ``k`` nearest bank entries.
        bank_neighbours: ``[B, k, D]`` those entries.
        batch_targets: ``[N, D]`` the batch's targets on all ranks (this rank's among them).

    Returns:
        ``(neighbours [B, k, D], picked [B, k])``: the ``k`` nearest entries by decreasing
        similarity, and where each came from: ``j < k`` is bank neighbour ``j``, ``j ≥ k`` is
        batch target ``j − k``.
    """
    k = bank_sims.shape[1]
    sims = torch.cat([bank_sims.float(), (targets @ batch_targets.T).float()], dim=1)
    picked = sims.topk(k, dim=1).indices
    from_bank = picked < k
    bank_rows = picked.clamp(max=k - 1).unsqueeze(-1).expand(-1, -1, bank_neighbours.shape[-1])
    chosen_bank = bank_neighbours.gather(1, bank_rows)
    chosen_batch = batch_targets[(picked - k).clamp(min=0)]
    neighbours = torch.where(from_bank.unsqueeze(-1), chosen_bank, chosen_batch.to(chosen_bank))
    return neighbours, picked
