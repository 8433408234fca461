"""The kNN top-k path: ties ordered by id, per-shard top-k merged into the global top-k."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from nbr_contrast.monitors.knn import (
    PAD_ID,
    TopK,
    merge_topk,
    neighbour_chunks,
    shard_topk,
)
from nbr_contrast.neighbours.search import SearchBackend, TorchSearch, search_backend


class HighestIdFirst(SearchBackend):
    """An exact backend that returns tied keys highest position first (a legal choice)."""

    def topk(
        self, queries: Tensor, keys: Tensor, k: int, valid: int | None = None
    ) -> tuple[Tensor, Tensor]:
        sims = queries @ keys.T
        pos = torch.arange(keys.shape[0]).expand_as(sims)
        by_pos = pos.flip(1)
        ordered = sims.gather(1, by_pos).argsort(dim=1, descending=True, stable=True)
        ids = by_pos.gather(1, ordered)[:, :k]
        return sims.gather(1, ids), ids


BLOCK = 4  # keys scored per matmul; shards hold whole blocks, as the ranks do


def single_process(train: Tensor, labels: Tensor, test: Tensor, k: int) -> TopK:
    backend = TorchSearch(chunk_size=BLOCK)
    chunks = list(neighbour_chunks(train, labels, test, k, chunk_size=64, backend=backend))
    return TopK(*(torch.cat(t) for t in zip(*chunks, strict=True)))


def sharded(train: Tensor, labels: Tensor, test: Tensor, k: int, cuts: list[int]) -> TopK:
    """Top-k per shard of whole blocks of rows, merged: what the ranks compute, in one process.

    All queries are searched at once, as by :func:`single_process` (one chunk of queries).
    """
    keys, queries = F.normalize(train, dim=1), F.normalize(test, dim=1)
    ids = torch.arange(train.shape[0])
    bounds = [0, *cuts, train.shape[0]]
    parts = [
        shard_topk(queries, keys[a:b], labels[a:b], ids[a:b], k, TorchSearch(chunk_size=BLOCK))
        for a, b in itertools.pairwise(bounds)
    ]
    return merge_topk(TopK(*(torch.cat(t, dim=1) for t in zip(*parts, strict=True))), k)


def assert_same(a: TopK, b: TopK) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_merge_orders_by_similarity_then_id() -> None:
    sims = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1]])
    ids = torch.tensor([[7, 4, 2, 3, 0]])
    merged = merge_topk(TopK(sims, ids + 100, ids), 4)
    assert merged.ids.tolist() == [[3, 4, 2, 7]]
    assert merged.labels.tolist() == [[103, 104, 102, 107]]
    assert merged.sims[0].tolist() == pytest.approx([0.9, 0.9, 0.5, 0.5])


def test_ties_at_the_kth_place_keep_the_lowest_ids() -> None:
    keys = F.normalize(torch.tensor([[1.0, 0.0]] * 5 + [[1.0, 1.0]]), dim=1)
    labels = torch.arange(6)
    ids = torch.tensor([40, 10, 30, 20, 50, 0])
    queries = torch.tensor([[1.0, 0.0]])
    found = shard_topk(queries, keys, labels, ids, 3, HighestIdFirst())
    assert found.ids.tolist() == [[10, 20, 30]]
    assert found.labels.tolist() == [[1, 3, 2]]


def test_a_small_shard_is_padded_after_its_keys() -> None:
    keys = F.normalize(torch.randn(2, 4), dim=1)
    found = shard_topk(keys, keys, torch.tensor([1, 2]), torch.tensor([5, 6]), 4, TorchSearch())
    assert found.sims.shape == (2, 4)
    assert found.ids[:, 2:].eq(PAD_ID).all() and found.sims[:, 2:].eq(float("-inf")).all()
    empty = shard_topk(keys, keys[:0], torch.tensor([]), torch.tensor([]), 3, TorchSearch())
    assert empty.ids.eq(PAD_ID).all()


def test_merged_shards_equal_one_search_when_the_top_k_live_on_one_shard() -> None:
    gen = torch.Generator().manual_seed(0)
    centre = torch.tensor([10.0, 0, 0, 0, 0, 0])
    train = torch.randn(40, 6, generator=gen)
    train[32:] += centre  # the nearest rows of every query, all on the second shard
    labels = torch.randint(0, 3, (40,), generator=gen)
    test = centre + torch.randn(7, 6, generator=gen)
    merged = sharded(train, labels, test, 5, [32])
    assert bool((merged.ids >= 32).all())
    assert_same(merged, single_process(train, labels, test, 5))


def test_merged_shards_equal_one_search_with_ties_across_shards() -> None:
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(6, 5, generator=gen)
    train = torch.cat([base, torch.randn(20, 5, generator=gen), base, base])  # ids i, 26+i, 32+i
    labels = torch.randint(0, 4, (38,), generator=gen)
    test = base + 0.001 * torch.randn(6, 5, generator=gen)
    for cuts in ([12], [4, 28, 32], [4, 8, 36], []):
        assert_same(sharded(train, labels, test, 4, cuts), single_process(train, labels, test, 4))
    # each query's three copies tie: the lowest ids come first, the highest is left out
    first = sharded(train, labels, test, 2, [12])
    assert first.ids.tolist() == [[i, 26 + i] for i in range(6)]


@pytest.mark.parametrize("name", ["torch", "auto"])
def test_backends_find_the_same_neighbours(name: str) -> None:
    gen = torch.Generator().manual_seed(2)
    train, test = torch.randn(50, 8, generator=gen), torch.randn(9, 8, generator=gen)
    labels = torch.randint(0, 3, (50,), generator=gen)
    backend = search_backend(name, chunk_size=BLOCK)
    chunks = neighbour_chunks(train, labels, test, 6, chunk_size=5, backend=backend)
    found = TopK(*(torch.cat(t) for t in zip(*chunks, strict=True)))
    expected = single_process(train, labels, test, 6)
    assert torch.equal(found.ids, expected.ids)
    torch.testing.assert_close(found.sims, expected.sims)
