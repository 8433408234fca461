"""CoNe losses (Zheng et al., arXiv 2308.10761): contrast your neighbours, supervised."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cone_neighbour_loss(
    q: Tensor,
    labels: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    k: int,
    temperature: float,
    exclude: Tensor | None = None,
) -> Tensor:
    """Neighbour loss: probability mass of same-class neighbours among the top-k.

    ::

        S = q·bankᵀ,   N(i) = top-k of S_i,   w_ij = softmax_{j∈N(i)}(S_ij/τ)
        p_i = Σ_{j∈N(i)} w_ij·[y_j = y_i]
        L = Σ_{i: p_i > 1e-8} −log p_i / B

    A sample with no same-class neighbour (``p_i ≤ 1e-8``) contributes nothing, but the
    normaliser stays ``B`` (as in the official code). ``q`` and the bank are L2-normalised
    here (the paper normalises both already, so this is a no-op on stored embeddings); the
    bank is a constant (detached). Bank slots with a label that no sample has
    (e.g. ``-1`` for empty slots) simply never count as same-class.

    Deviation: ``exclude`` removes entries from a row's candidates before the top-k (the
    sample's own older teacher entries: on a small dataset the bank spans a whole epoch, so
    every sample would otherwise find itself, which never happens at ImageNet scale).

    Args:
        q: Student embeddings ``[B, D]``.
        labels: Class labels ``[B]``.
        bank: Teacher embeddings ``[K, D]``.
        bank_labels: Their labels ``[K]``.
        k: Neighbours per sample (512 in the paper), ``1 ≤ k ≤ K``.
        temperature: ``τ_sup``.
        exclude: Optional boolean ``[B, K]``: entries row ``i`` must never use.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If ``k`` is not in ``[1, K]``.
    """
    size = bank.shape[0]
    if not 1 <= k <= size:
        raise ValueError(f"k={k} neighbours requested but the bank holds {size} entries")
    sims = F.normalize(q, dim=1) @ F.normalize(bank.detach(), dim=1).T
    if exclude is not None:
        sims = sims.masked_fill(exclude, float("-inf"))
    top, idx = sims.topk(k, dim=1)
    w = (top / temperature).softmax(dim=1)
    same = (bank_labels[idx] == labels.unsqueeze(1)) & top.isfinite()
    p = (w * same).sum(dim=1)
    valid = p > 1e-8
    nll = torch.where(valid, -p.clamp_min(1e-8).log(), torch.zeros_like(p))
    return nll.sum() / q.shape[0]


@torch.no_grad()
def cone_dc_target(
    teacher_emb: Tensor,
    bank: Tensor,
    bank_probs: Tensor,
    temperature: float,
    exclude: Tensor | None = None,
) -> Tensor:
    """Distributional-consistency target ``t_i = Σ_j softmax_j(k_i·bank_j/τ)·P_j``.

    The softmax runs over the whole bank, less the entries ``exclude`` marks for the row
    (see :func:`cone_neighbour_loss`); ``k`` (teacher embeddings) and the bank are
    L2-normalised here. No gradient.

    Args:
        teacher_emb: Teacher embeddings of the batch ``[B, D]``.
        bank: Teacher embeddings in the bank ``[K, D]``.
        bank_probs: Teacher class probabilities stored with them ``[K, C]``.
        temperature: ``τ_dc``.
        exclude: Optional boolean ``[B, K]``: entries row ``i`` must never use.

    Returns:
        Targets ``[B, C]``; rows are distributions when the rows of ``bank_probs`` are.
    """
    sims = F.normalize(teacher_emb, dim=1) @ F.normalize(bank, dim=1).T
    if exclude is not None:
        sims = sims.masked_fill(exclude, float("-inf"))
    return (sims / temperature).softmax(dim=1) @ bank_probs.to(sims.dtype)


def cone_dc_loss(
    logits: Tensor,
    teacher_emb: Tensor,
    bank: Tensor,
    bank_probs: Tensor,
    temperature: float,
    mask: Tensor | None = None,
    exclude: Tensor | None = None,
) -> Tensor:
    """Distributional-consistency loss ``L_dc = Σ_i KL(t_i ‖ softmax(logits_i)) / B``.

    ``t`` is :func:`cone_dc_target` (constant). ``KL(t‖s) = Σ_c t_c (log t_c − log s_c)``
    with ``0·log 0 = 0``.

    Args:
        logits: Student class logits ``[B, C]``.
        teacher_emb: Teacher embeddings of the batch ``[B, D]``.
        bank: Teacher embeddings in the bank ``[K, D]``.
        bank_probs: Teacher class probabilities in the bank ``[K, C]``.
        temperature: ``τ_dc``.
        mask: Optional boolean ``[B]`` selecting the samples that contribute (the official
            confidence mask); the sum is still divided by ``B``.
        exclude: Optional boolean ``[B, K]``: bank entries row ``i`` must never use.

    Returns:
        Scalar loss.
    """
    target = cone_dc_target(teacher_emb, bank, bank_probs, temperature, exclude)
    log_s = F.log_softmax(logits, dim=1)
    kl = (torch.special.xlogy(target, target) - target * log_s).sum(dim=1)
    if mask is not None:
        kl = torch.where(mask, kl, torch.zeros_like(kl))
    return kl.sum() / logits.shape[0]
