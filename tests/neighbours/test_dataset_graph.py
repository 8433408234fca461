"""DatasetGraph: kNN graph against numpy brute force, clusters, purity and checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.functional import normalize

from nbr_contrast.neighbours import dataset_graph, search
from nbr_contrast.neighbours.dataset_graph import DatasetGraph
from nbr_contrast.neighbours.search import FaissSearch, TorchSearch


def backends() -> list:
    found = [TorchSearch(chunk_size=7)]
    if search.faiss_available():
        found.append(FaissSearch())
    return found


def numpy_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(sims, ids, axis=1)


@pytest.mark.parametrize("backend", backends(), ids=lambda b: type(b).__name__)
def test_knn_matches_numpy_brute_force(backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_graph, "QUERY_CHUNK", 9)  # several query chunks
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 12)).astype(np.float32) * 3
    labels = torch.from_numpy(rng.integers(0, 3, 40))
    index = DatasetGraph.build(torch.from_numpy(x), labels, k=5, n_clusters=4, backend=backend)
    ids, sims = numpy_knn(x.astype(np.float64), 5)
    assert np.array_equal(index.knn_ids.numpy(), ids)
    np.testing.assert_allclose(index.knn_sims.numpy(), sims, atol=1e-5)
    torch.testing.assert_close(index.embeddings.norm(dim=1), torch.ones(40))
    assert index.cluster.shape == (40,) and index.centroids.shape == (4, 12)
    own = (index.embeddings * index.centroids[index.cluster]).sum(dim=1)
    torch.testing.assert_close(index.centroid_sim, own, atol=1e-5, rtol=0)
    purity = (labels[index.knn_ids] == labels[:, None]).float().mean().item()
    assert index.neighbour_purity() == pytest.approx(purity)


def test_self_excluded_even_with_duplicate_points() -> None:
    x = normalize(torch.randn(10, 4), dim=1)
    x[3] = x[7]
    index = DatasetGraph.build(x, None, k=3, n_clusters=None, backend=TorchSearch())
    assert not (index.knn_ids == torch.arange(10)[:, None]).any()
    assert int(index.knn_ids[3, 0]) == 7 and int(index.knn_ids[7, 0]) == 3
    assert index.neighbour_purity() is None and index.cluster is None


def test_include_self_and_k_error() -> None:
    x = normalize(torch.randn(6, 4), dim=1)
    index = DatasetGraph.build(
        x, None, k=2, n_clusters=None, backend=TorchSearch(), exclude_self=False
    )
    assert torch.equal(index.knn_ids[:, 0], torch.arange(6))
    with pytest.raises(ValueError, match=r"k=6"):
        DatasetGraph.build(x, None, k=6, n_clusters=None, backend=TorchSearch())


@pytest.mark.skipif(not search.faiss_available(), reason="faiss not installed")
def test_ivf_path_above_threshold() -> None:
    x = normalize(torch.randn(500, 8), dim=1)
    exact = DatasetGraph.build(x, None, k=4, n_clusters=None, backend=FaissSearch())
    ivf = DatasetGraph.build(
        x, None, k=4, n_clusters=None, backend=FaissSearch(ivf_threshold=100, nprobe=1000)
    )
    assert torch.equal(exact.knn_ids, ivf.knn_ids)


def test_state_round_trip(tmp_path: Path) -> None:
    x = normalize(torch.randn(30, 6), dim=1)
    index = DatasetGraph.build(x, torch.arange(30) % 3, k=3, n_clusters=3, backend=TorchSearch())
    index.epoch = 7
    torch.save(index.state_dict(), tmp_path / "index.pt")
    state = torch.load(tmp_path / "index.pt")
    restored = DatasetGraph.from_state_dict(state)
    other = DatasetGraph.build(x[:10], None, k=2, n_clusters=None, backend=TorchSearch())
    other.load_state_dict(state)
    for copy in (restored, other):
        assert copy.epoch == 7
        for name in ("embeddings", "knn_ids", "knn_sims", "labels", "cluster", "centroids"):
            assert torch.equal(getattr(copy, name), getattr(index, name))
    state["cluster"] = state["cluster"][:5]
    with pytest.raises(ValueError, match=r"cluster"):
        DatasetGraph.from_state_dict(state)
