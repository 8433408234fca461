"""Weighted cosine k-nearest-neighbour classifier (Wu et al., 2018, "InstDisc").

Each test feature votes with its ``k`` most cosine-similar training features; neighbour
``j`` adds ``exp(sim_j / temperature)`` to the score of its class. This is the monitor
commonly used to track self-supervised representations during training.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_k(k: int, num_train: int) -> None:
    if k < 1:
        raise ValueError(f"k={k} must be at least 1.")
    if k > num_train:
        raise ValueError(
            f"k={k} is larger than the {num_train} training features; choose k <= {num_train}."
        )


def _top_neighbours(
    train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, k: int, chunk_size: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(sims [m, k], labels [m, k])`` of the ``k`` nearest neighbours per test chunk.

    Similarities are sorted in decreasing order, so the first ``k'`` columns are the
    ``k'`` nearest neighbours for any ``k' <= k``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be at least 1.")
    _check_k(k, train_feats.shape[0])
    train = F.normalize(train_feats.float(), dim=1)
    labels = train_labels.to(train.device).long()
    for start in range(0, test_feats.shape[0], chunk_size):
        chunk = F.normalize(test_feats[start : start + chunk_size].to(train.device).float(), dim=1)
        sims, idx = (chunk @ train.T).topk(k, dim=1, largest=True, sorted=True)
        yield sims, labels[idx]


def _votes(sims: Tensor, nbr_labels: Tensor, temperature: float, num_classes: int) -> Tensor:
    """Class scores ``[m, C]``: per class, the sum of ``exp(sim / temperature)``."""
    weights = (sims / temperature).exp()
    scores = torch.zeros(sims.shape[0], num_classes, device=sims.device, dtype=weights.dtype)
    return scores.scatter_add_(1, nbr_labels, weights)


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    k: int,
    temperature: float,
    num_classes: int,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of a temperature-weighted cosine kNN classifier.

    Args:
        train_feats: Reference features ``[N, F]`` (normalised here; need not be).
        train_labels: Integer labels ``[N]`` of the reference features.
        test_feats: Query features ``[M, F]``.
        k: Number of neighbours (at most ``N``).
        temperature: Softness of the vote weights ``exp(sim / temperature)``.
        num_classes: Number of classes ``C``.
        chunk_size: Query rows processed at once (bounds the ``[chunk, N]`` similarity
            matrix held in memory).

    Returns:
        Scores ``[M, C]`` on the device of ``train_feats``; ``argmax(dim=1)`` is the
        prediction.

    Raises:
        ValueError: If ``k`` is not in ``[1, N]`` or ``chunk_size`` is not positive.
    """
    parts = [
        _votes(sims, nbr, temperature, num_classes)
        for sims, nbr in _top_neighbours(train_feats, train_labels, test_feats, k, chunk_size)
    ]
    if not parts:
        return torch.zeros(0, num_classes, device=train_feats.device)
    return torch.cat(parts)


def knn_accuracy(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    ks: Sequence[int],
    temperature: float,
    num_classes: int,
    chunk_size: int = 1024,
) -> dict[int, float]:
    """Top-1 accuracy of the weighted cosine kNN classifier for several ``k`` at once.

    The ``max(ks)`` nearest neighbours are searched once and every smaller ``k`` reuses
    the first columns of that sorted result.

    Args:
        train_feats: Reference features ``[N, F]``.
        train_labels: Integer labels ``[N]``.
        test_feats: Query features ``[M, F]``.
        test_labels: Integer labels ``[M]`` of the queries.
        ks: Neighbour counts to evaluate (each at most ``N``).
        temperature: Softness of the vote weights.
        num_classes: Number of classes.
        chunk_size: Query rows processed at once.

    Returns:
        ``{k: accuracy in percent}`` in the order of ``ks``.

    Raises:
        ValueError: If ``ks`` is empty, a ``k`` is not in ``[1, N]`` or there are no queries.
    """
    if not ks:
        raise ValueError("ks is empty; pass at least one number of neighbours k.")
    if test_feats.shape[0] == 0:
        raise ValueError("test_feats is empty; kNN accuracy needs at least one query.")
    for k in ks:
        _check_k(k, train_feats.shape[0])
    correct = dict.fromkeys(ks, 0)
    start = 0
    for sims, nbr in _top_neighbours(train_feats, train_labels, test_feats, max(ks), chunk_size):
        targets = test_labels[start : start + sims.shape[0]].to(sims.device).long()
        start += sims.shape[0]
        for k in correct:
            pred = _votes(sims[:, :k], nbr[:, :k], temperature, num_classes).argmax(dim=1)
            correct[k] += int((pred == targets).sum())
    return {k: 100.0 * hits / test_feats.shape[0] for k, hits in correct.items()}
