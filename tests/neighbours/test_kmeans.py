"""Spherical k-means recovers well-separated clusters with either backend."""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import normalize

from nbr_contrast.neighbours import kmeans, search
from nbr_contrast.neighbours.kmeans import spherical_kmeans

BACKENDS = ["torch"] + (["faiss"] if search.faiss_available() else [])


def separated(n_per: int, n_clusters: int, dim: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centres = normalize(torch.randn(n_clusters, dim, generator=gen), dim=1)
    truth = torch.arange(n_clusters).repeat_interleave(n_per)
    x = normalize(centres[truth] + 0.05 * torch.randn(len(truth), dim, generator=gen), dim=1)
    return x, truth


@pytest.mark.parametrize("backend", BACKENDS)
def test_recovers_separated_clusters(backend: str) -> None:
    x, truth = separated(60, 6, 32)
    result = spherical_kmeans(x, 6, iters=20, seed=0, backend=backend)
    assert result.centroids.shape == (6, 32) and result.assignments.dtype == torch.int64
    torch.testing.assert_close(result.centroids.norm(dim=1), torch.ones(6))
    # Each true cluster maps to exactly one found cluster, and the mapping is one-to-one.
    found = {int(c): set(result.assignments[truth == c].tolist()) for c in range(6)}
    assert all(len(ids) == 1 for ids in found.values())
    assert len(set.union(*found.values())) == 6
    ref = (x @ result.centroids.T).max(dim=1)
    assert torch.equal(result.assignments, ref.indices)
    torch.testing.assert_close(result.sims_to_centroid, ref.values)


def test_torch_path_is_seeded() -> None:
    x, _ = separated(30, 4, 16, seed=1)
    a = spherical_kmeans(x, 8, seed=3, backend="torch")
    b = spherical_kmeans(x, 8, seed=3, backend="torch")
    assert torch.equal(a.centroids, b.centroids)


def test_empty_clusters_are_reseeded() -> None:
    x, _ = separated(20, 3, 8, seed=2)
    result = spherical_kmeans(x, 12, iters=10, backend="torch")
    assert len(result.assignments.unique()) > 3


def test_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = separated(2, 2, 4)
    with pytest.raises(ValueError, match=r"n_clusters=5"):
        spherical_kmeans(x, 5)
    with pytest.raises(ValueError, match=r"backend='sklearn'"):
        spherical_kmeans(x, 2, backend="sklearn")
    monkeypatch.setattr(kmeans, "faiss_available", lambda: False)
    with pytest.raises(ImportError, match=r"nbr-contrast\[faiss\]"):
        spherical_kmeans(x, 2, backend="faiss")
    assert spherical_kmeans(x, 2, backend="auto").centroids.shape == (2, 4)
