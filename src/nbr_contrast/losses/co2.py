"""CO2 losses (Wei, Wang, Shen, Yuille, ICLR 2021, arXiv 2010.02217).

The total CO2 objective is ``L = L_ins + α·L_con`` per view direction, built by the caller
from :func:`moco_infonce` (``τ_ins``) and :func:`co2_consistency` (``τ_con``); ``α = 0`` is
plain MoCo v2.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from nbr_contrast.losses.infonce import info_nce


def moco_infonce(
    q: Tensor, k: Tensor, queue: Tensor, temperature: float, exclude: Tensor | None = None
) -> Tensor:
    """CO2's instance loss, the MoCo v2 InfoNCE.

    ::

        L_ins = mean_i −log exp(q_i·p_i/τ) / (exp(q_i·p_i/τ) + Σ_k exp(q_i·n_k/τ))

    Vectors are L2-normalised here; the keys ``p`` (``k``) and the queue ``n`` are treated as
    constants (detached).

    Args:
        q: Queries ``[B, D]``.
        k: Momentum keys of the other view ``[B, D]``.
        queue: Queue snapshot taken before enqueueing this batch ``[K, D]``.
        temperature: ``τ_ins``.
        exclude: ``[B, K]`` queue entries left out of row ``i``'s negatives (the query's own
            earlier keys, with ``exclude_self``; not in MoCo v2, which keeps them).

    Returns:
        Scalar batch-mean loss.
    """
    return info_nce(q, k.detach(), queue.detach(), temperature, exclude=exclude)


def co2_consistency(
    q: Tensor, k: Tensor, queue: Tensor, temperature: float, exclude: Tensor | None = None
) -> Tensor:
    """CO2's consistency regulariser over the queue entries.

    ::

        Q_i = softmax_k(q_i·n_k/τ),   P_i = softmax_k(p_i·n_k/τ)  (constant target)
        L_con = mean_i [½ KL(P_i‖Q_i) + ½ KL(Q_i‖P_i)]

    The distributions run over the ``K`` queue entries only (the positive is not in them).
    Vectors are L2-normalised here; ``k`` and the queue are detached, so the gradient reaches
    ``q`` only (through both KL terms). Deviation from lightly's ``CO2Regularizer``: that one
    puts the positive into both distributions and returns a detached value; this one
    follows the paper.

    Args:
        q: Queries ``[B, D]``.
        k: Momentum keys of the other view ``[B, D]`` (``p`` in the paper).
        queue: Queue snapshot ``[K, D]``.
        temperature: ``τ_con``.
        exclude: ``[B, K]`` queue entries left out of row ``i``'s two distributions (the
            query's own earlier keys, with ``exclude_self``; the paper keeps them).

    Returns:
        Scalar batch-mean symmetric KL, ``≥ 0`` and ``0`` when ``q`` and ``k`` coincide.
    """
    queue = F.normalize(queue.detach(), dim=1)
    sims_q = F.normalize(q, dim=1) @ queue.T / temperature
    sims_p = F.normalize(k.detach(), dim=1) @ queue.T / temperature
    if exclude is not None:
        sims_q = sims_q.masked_fill(exclude, float("-inf"))
        sims_p = sims_p.masked_fill(exclude, float("-inf"))
    log_q = F.log_softmax(sims_q, dim=1)
    log_p = F.log_softmax(sims_p, dim=1)
    diff = log_p - log_q
    if exclude is not None:  # both are 0 there: no term (and no -inf - -inf)
        diff = diff.masked_fill(exclude, 0.0)
    kl_pq = (log_p.exp() * diff).sum(dim=1)
    kl_qp = (log_q.exp() * -diff).sum(dim=1)
    return (0.5 * (kl_pq + kl_qp)).mean()
