"""What monitoring does with labels, where an unknown label is ``-1``.

The online probe's loss, the neighbour-agreement logs (``nbr/agreement``) and the kNN monitor
each count only the samples with a known label, so partly labelled training data (STL-10's
``train+unlabeled``) is monitored on its labelled part.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from nbr_contrast.monitors.knn import knn_predict

LABEL_LOGS = frozenset({"nbr/agreement", "nbr/weighted_agreement"})
"""Training logs that compare labels, left out when the training images have none."""


def probe_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the samples with a known label (0 when there is none)."""
    known = labels >= 0
    terms = F.cross_entropy(logits, labels.clamp_min(0), reduction="none")
    return (terms * known).sum() / known.sum().clamp_min(1)


def knn_monitor_accuracy(
    bank: tuple[Tensor, ...],
    queries: tuple[Tensor, ...],
    k: int,
    temperature: float,
    num_classes: int,
) -> Tensor | None:
    """Accuracy (percent) of a kNN classifier of query features over a labelled bank.

    Args:
        bank: Features ``[N, F]`` and labels ``[N]``; rows labelled ``-1`` are left out.
        queries: Features ``[M, F]`` and labels ``[M]``.
        k: Neighbours (at most the labelled bank rows).
        temperature: Weighting temperature.
        num_classes: Number of classes.

    Returns:
        The accuracy, or ``None`` when no bank row has a label.
    """
    known = bank[1] >= 0
    feats, labels = bank[0][known], bank[1][known]
    if not len(labels):
        return None
    scores = knn_predict(feats, labels, queries[0], min(k, len(labels)), temperature, num_classes)
    return (scores.argmax(dim=1) == queries[1]).float().mean() * 100.0
