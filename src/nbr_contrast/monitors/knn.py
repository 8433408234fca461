"""Weighted cosine k-nearest-neighbour classifier (Wu et al., 2018, "InstDisc").

Each test feature votes with its ``k`` most cosine-similar training features; neighbour
``j`` adds ``exp(sim_j / temperature)`` to the score of its class. This is the monitor
commonly used to track self-supervised representations during training.

Neighbours are found by the search backends of :mod:`nbr_contrast.neighbours.search`, the
same top-k path as the neighbour banks. Equal similarities are ordered by the training
feature's id (lower first), at the ``k``-th place too, so the neighbours of a query do not
depend on how the training features are split into ranks:
:mod:`nbr_contrast.app.evaluation.knn_dist` merges per-rank results with :func:`merge_topk` and gets
exactly the result of one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nbr_contrast.neighbours.search import SearchBackend, TorchSearch, check_k

PAD_ID = torch.iinfo(torch.long).max
"""Id of the filler columns of a shard with fewer than ``k`` features (sorted last)."""
KEY_BLOCK = 4096
"""Training features scored per block. Ranks hold whole blocks of the global order, so every
rank scores exactly the blocks one process scores, and the similarities are bitwise equal."""


class TopK(NamedTuple):
    """The nearest training features of a block of queries, nearest first.

    Attributes:
        sims: float32 ``[M, k]`` cosine similarities, decreasing along each row.
        labels: int64 ``[M, k]`` labels of the neighbours.
        ids: int64 ``[M, k]`` ids of the neighbours (ties are ordered by increasing id).
    """

    sims: Tensor
    labels: Tensor
    ids: Tensor


Combine = Callable[[TopK], TopK]
"""Turns the neighbours among this process's training features into the global ones."""


def merge_topk(candidates: TopK, k: int) -> TopK:
    """The ``k`` best candidates of every row: highest similarity first, then lowest id.

    Args:
        candidates: ``[M, n]`` candidates in any order (``n >= k``).
        k: Neighbours kept per row.

    Returns:
        ``[M, k]`` neighbours.
    """
    by_id = candidates.ids.argsort(dim=1, stable=True)
    sims, labels, ids = (t.gather(1, by_id) for t in candidates)
    order = sims.argsort(dim=1, descending=True, stable=True)[:, :k]
    return TopK(sims.gather(1, order), labels.gather(1, order), ids.gather(1, order))


def _pad(found: TopK, k: int) -> TopK:
    """``found`` widened to ``k`` columns with ``-inf`` fillers of id :data:`PAD_ID`."""
    missing = k - found.sims.shape[1]
    if missing <= 0:
        return found
    rows = found.sims.shape[0]
    return TopK(
        torch.cat([found.sims, found.sims.new_full((rows, missing), float("-inf"))], dim=1),
        torch.cat([found.labels, found.labels.new_zeros(rows, missing)], dim=1),
        torch.cat([found.ids, found.ids.new_full((rows, missing), PAD_ID)], dim=1),
    )


def shard_topk(
    queries: Tensor, keys: Tensor, labels: Tensor, ids: Tensor, k: int, backend: SearchBackend
) -> TopK:
    """The ``k`` nearest ``keys`` of every query, ties at the ``k``-th place broken by id.

    The backend is asked for ``k + 1`` neighbours. While a row's ``k``-th similarity equals
    its last one, a tied key of lower id may have been left out, so the whole search is
    repeated for twice as many (rare: duplicate images). The repeat scores the same blocks
    as the first search, so similarities are unchanged.

    Args:
        queries: ``[M, D]`` L2-normalised queries.
        keys: ``[N, D]`` L2-normalised keys (this process's training features).
        labels: ``[N]`` labels of the keys.
        ids: ``[N]`` distinct ids of the keys.
        k: Neighbours per query; a shard of fewer keys is padded (see :data:`PAD_ID`).
        backend: Search backend.

    Returns:
        ``[M, k]`` neighbours on the queries' device.
    """
    take = min(k + 1, keys.shape[0])
    if take == 0:
        empty = queries.new_empty(queries.shape[0], 0)
        return _pad(TopK(empty, empty.long(), empty.long()), k)
    while True:
        sims, pos = backend.topk(queries, keys, take)
        if take <= k or take == keys.shape[0] or not (sims[:, k - 1] == sims[:, -1]).any():
            break
        take = min(2 * take, keys.shape[0])
    pos = pos.to(keys.device)
    found = TopK(sims, labels[pos].to(sims.device), ids[pos].to(sims.device))
    return _pad(merge_topk(found, k), k)


def neighbour_chunks(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    k: int,
    chunk_size: int = 1024,
    backend: SearchBackend | None = None,
    train_ids: Tensor | None = None,
    combine: Combine | None = None,
) -> Iterator[TopK]:
    """Yield the ``k`` nearest training features of every chunk of test features, in order.

    Args:
        train_feats: ``[N, F]`` training features (normalised here).
        train_labels: ``[N]`` their labels.
        test_feats: ``[M, F]`` queries (normalised here).
        k: Neighbours per query (sorted, so the first ``k'`` columns serve any ``k' <= k``).
        chunk_size: Queries searched at once.
        backend: Search backend (default: float32
            :class:`~nbr_contrast.neighbours.search.TorchSearch` by :data:`KEY_BLOCK`).
        train_ids: ``[N]`` distinct ids ordering ties (default: the row positions).
        combine: Turns this process's neighbours into the global ones (default: none).

    Raises:
        ValueError: If ``chunk_size`` is not positive.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be at least 1.")
    backend = backend or TorchSearch(chunk_size=KEY_BLOCK)
    keys = F.normalize(train_feats.float(), dim=1)
    labels = train_labels.to(keys.device).long()
    ids = torch.arange(keys.shape[0], device=keys.device) if train_ids is None else train_ids
    ids = ids.to(keys.device).long()
    for start in range(0, test_feats.shape[0], chunk_size):
        chunk = test_feats[start : start + chunk_size].to(keys.device).float()
        found = shard_topk(F.normalize(chunk, dim=1), keys, labels, ids, k, backend)
        yield found if combine is None else combine(found)


def votes(found: TopK, k: int, temperature: float, num_classes: int) -> Tensor:
    """Class scores ``[M, C]`` of the first ``k`` neighbours: per class, ``Σ exp(sim / τ)``."""
    weights = (found.sims[:, :k] / temperature).exp()
    scores = torch.zeros(weights.shape[0], num_classes, device=weights.device, dtype=weights.dtype)
    return scores.scatter_add_(1, found.labels[:, :k], weights)


def check_counts(ks: Sequence[int], temperatures: Sequence[float], num_train: int) -> None:
    """Refuse empty ``ks`` or ``temperatures`` and a ``k`` outside ``[1, num_train]``."""
    if not ks:
        raise ValueError("ks is empty; pass at least one number of neighbours k.")
    if not temperatures:
        raise ValueError("temperatures is empty; pass at least one kNN temperature.")
    for k in ks:
        check_k(k, num_train)


def accuracies_of(
    chunks: Iterable[TopK],
    test_labels: Tensor,
    ks: Sequence[int],
    temperatures: Sequence[float],
    num_classes: int,
) -> dict[float, dict[int, float]]:
    """Top-1 accuracy (percent) per temperature and ``k`` from the neighbours of every query.

    Args:
        chunks: Neighbours of consecutive chunks of the queries (at least ``max(ks)`` each).
        test_labels: ``[M]`` labels of the queries.
        ks: Neighbour counts.
        temperatures: Vote temperatures.
        num_classes: Number of classes.

    Raises:
        ValueError: If there are no queries.
    """
    if test_labels.shape[0] == 0:
        raise ValueError("test_feats is empty; kNN accuracy needs at least one query.")
    correct = {t: dict.fromkeys(ks, 0) for t in temperatures}
    start = 0
    for found in chunks:
        targets = test_labels[start : start + found.sims.shape[0]].to(found.sims.device).long()
        start += found.sims.shape[0]
        for t, hits in correct.items():
            for k in hits:
                pred = votes(found, k, t, num_classes).argmax(dim=1)
                hits[k] += int((pred == targets).sum())
    total = test_labels.shape[0]
    return {t: {k: 100.0 * n / total for k, n in hits.items()} for t, hits in correct.items()}


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    k: int,
    temperature: float,
    num_classes: int,
    chunk_size: int = 1024,
    backend: SearchBackend | None = None,
) -> Tensor:
    """Class scores of a temperature-weighted cosine kNN classifier.

    Args:
        train_feats: Reference features ``[N, F]`` (normalised here; need not be).
        train_labels: Integer labels ``[N]`` of the reference features.
        test_feats: Query features ``[M, F]``.
        k: Number of neighbours (at most ``N``).
        temperature: Softness of the vote weights ``exp(sim / temperature)``.
        num_classes: Number of classes ``C``.
        chunk_size: Query rows searched at once.
        backend: Search backend (default: float32
            :class:`~nbr_contrast.neighbours.search.TorchSearch` by :data:`KEY_BLOCK`).

    Returns:
        Scores ``[M, C]`` on the device of ``train_feats``; ``argmax(dim=1)`` is the
        prediction.

    Raises:
        ValueError: If ``k`` is not in ``[1, N]`` or ``chunk_size`` is not positive.
    """
    check_k(k, train_feats.shape[0])
    chunks = neighbour_chunks(train_feats, train_labels, test_feats, k, chunk_size, backend)
    parts = [votes(found, k, temperature, num_classes) for found in chunks]
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
    backend: SearchBackend | None = None,
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
        chunk_size: Query rows searched at once.
        backend: Search backend (default: float32
            :class:`~nbr_contrast.neighbours.search.TorchSearch` by :data:`KEY_BLOCK`).

    Returns:
        ``{k: accuracy in percent}`` in the order of ``ks``.

    Raises:
        ValueError: If ``ks`` is empty, a ``k`` is not in ``[1, N]`` or there are no queries.
    """
    check_counts(ks, [temperature], train_feats.shape[0])
    chunks = neighbour_chunks(train_feats, train_labels, test_feats, max(ks), chunk_size, backend)
    return accuracies_of(chunks, test_labels, ks, [temperature], num_classes)[temperature]
