"""The kNN classifier on training features sharded across the ranks of a process group.

Each rank holds only its slice of the training features and its slice of the test
features. The test features are all-gathered (they are small); every rank then searches all
test queries, chunk by chunk, among its own training features, the per-rank top-k
(similarities, labels, global ids) of a chunk are all-gathered and merged into the global
top-k with :func:`~nbr_contrast.monitors.knn.merge_topk`. Ties are ordered by global id, and
a rank's slice is whole :data:`~nbr_contrast.monitors.knn.KEY_BLOCK` blocks of the global
order, so with the torch backend each block is scored by the same matmul as on one process:
every rank ends with exactly the neighbours, votes and accuracies one process computes
(FAISS tiles its own way; its similarities may differ in the last bit). Without a process
group (or on one rank) the same code is the single-process classifier.

Collectives run on the process group's device: the current CUDA device for NCCL, the CPU
for gloo.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.distributed as dist
from torch import Tensor

from nbr_contrast.monitors.knn import (
    TopK,
    accuracies_of,
    check_counts,
    merge_topk,
    neighbour_chunks,
)
from nbr_contrast.neighbours.search import SearchBackend
from nbr_contrast.utils.dist import gather_no_grad, is_dist, world_size


def comm_device() -> torch.device:
    """The device collectives of the default group run on (the CPU when there is none)."""
    if is_dist() and "nccl" in str(dist.get_backend()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_rows(x: Tensor) -> Tensor:
    """Concatenate ``x`` of every rank along dim 0, in rank order; row counts may differ.

    Args:
        x: ``[n_r, ...]``; the trailing shape is the same on every rank that has rows (a
            rank with none may pass any trailing shape).

    Returns:
        ``[Σ n_r, ...]`` on ``x``'s device; ``x`` itself when not distributed.
    """
    if world_size() == 1:
        return x
    device = comm_device()
    shapes = gather_no_grad(torch.tensor([list(x.shape)], device=device)).cpu()
    counts = shapes[:, 0].tolist()
    longest = max(counts)
    if longest == 0:
        return x
    if x.shape[0] == 0:  # an empty shard takes the trailing shape of the others
        x = x.reshape(0, *shapes[counts.index(longest), 1:].tolist())
    padded = x.new_zeros((longest, *x.shape[1:]), device=device)
    padded[: x.shape[0]] = x.to(device)
    parts = gather_no_grad(padded).split(longest)
    rows = [part[:n] for part, n in zip(parts, counts, strict=True)]
    return torch.cat(rows).to(x.device)


def merge_ranks(found: TopK, k: int) -> TopK:
    """The global top-``k`` from every rank's top-``k`` of the same queries.

    Args:
        found: This rank's ``[M, k]`` neighbours (``M`` and ``k`` equal on every rank).
        k: Neighbours kept.

    Returns:
        ``[M, k]`` global neighbours, identical on every rank, on ``found``'s device.
    """
    if world_size() == 1:
        return found
    device, rows = comm_device(), found.sims.shape[0]

    def side_by_side(t: Tensor) -> Tensor:  # [W·M, k] in rank order -> [M, W·k]
        every = gather_no_grad(t.to(device)).view(world_size(), rows, -1)
        return every.permute(1, 0, 2).reshape(rows, -1)

    merged = merge_topk(TopK(*(side_by_side(t) for t in found)), k)
    return TopK(*(t.to(found.sims.device) for t in merged))


def sharded_knn_accuracies(
    train: tuple[Tensor, Tensor, Tensor],
    test: tuple[Tensor, Tensor, Tensor],
    ks: Sequence[int],
    temperatures: Sequence[float],
    num_classes: int,
    backend: SearchBackend | None = None,
    chunk_size: int = 1024,
) -> dict[float, dict[int, float]]:
    """Weighted cosine kNN accuracy (percent) per temperature and ``k``, on every rank.

    Call it on every rank of the default group (or without one).

    Args:
        train: This rank's ``(feats [n, F], labels [n], ids [n])`` of labelled training
            features; ids are global and distinct (dataset indices).
        test: This rank's ``(feats, labels, ids)`` of test features; the gathered test set
            is ordered by id.
        ks: Neighbour counts (each at most the global number of training features).
        temperatures: Vote temperatures.
        num_classes: Number of classes.
        backend: Search backend (default: exact float32 torch search).
        chunk_size: Test queries searched (and their top-k gathered) at once.

    Returns:
        ``{temperature: {k: accuracy}}``, the same on every rank.

    Raises:
        ValueError: If ``ks`` or ``temperatures`` is empty, a ``k`` exceeds the training
            features or there is no test feature (on every rank alike).
    """
    feats, labels, ids = train
    order = all_gather_rows(test[2]).argsort()
    queries = all_gather_rows(test[0])[order]
    targets = all_gather_rows(test[1])[order]
    total = all_gather_rows(torch.tensor([feats.shape[0]])).sum()
    check_counts(ks, temperatures, int(total))
    k = max(ks)
    chunks = neighbour_chunks(
        feats, labels, queries, k, chunk_size, backend, ids, partial(merge_ranks, k=k)
    )
    return accuracies_of(chunks, targets, ks, temperatures, num_classes)
