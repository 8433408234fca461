"""Search backends: agreement with each other and with brute force, and their errors."""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import normalize

from nbr_contrast.neighbours import search
from nbr_contrast.neighbours.search import FaissSearch, TorchSearch, search_backend

needs_faiss = pytest.mark.skipif(not search.faiss_available(), reason="faiss not installed")


def random_unit(n: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return normalize(torch.randn(n, d, generator=gen), dim=1)


def clustered_unit(n: int, d: int, n_centres: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_centres, d, generator=gen) * 3
    labels = torch.randint(n_centres, (n,), generator=gen)
    return normalize(centres[labels] + torch.randn(n, d, generator=gen), dim=1)


def brute_force(queries: torch.Tensor, keys: torch.Tensor, k: int):
    scores = queries.double() @ keys.double().T
    sims, ids = scores.topk(k, dim=1)
    return sims.float(), ids


def backends() -> list:
    found = [TorchSearch(chunk_size=1 << 20), TorchSearch(chunk_size=97)]
    if search.faiss_available():
        found.append(FaissSearch())
    return found


@pytest.mark.parametrize("data", ["random", "clustered"])
@pytest.mark.parametrize("k", [1, 7, 64])
def test_backends_match_brute_force(data: str, k: int) -> None:
    keys = random_unit(1000, 32, 0) if data == "random" else clustered_unit(1000, 32, 5, 0)
    queries = random_unit(50, 32, 1) if data == "random" else clustered_unit(50, 32, 5, 1)
    sims_ref, ids_ref = brute_force(queries, keys, k)
    for backend in backends():
        sims, ids = backend.topk(queries, keys, k)
        assert ids.dtype == torch.int64 and sims.dtype == torch.float32
        assert sims.shape == ids.shape == (50, k)
        assert torch.equal(ids, ids_ref), type(backend).__name__
        torch.testing.assert_close(sims, sims_ref, atol=1e-5, rtol=0)
        assert (sims[:, :-1] >= sims[:, 1:]).all()


@needs_faiss
def test_chunked_torch_agrees_with_faiss() -> None:
    keys, queries = clustered_unit(2000, 64, 8, 2), clustered_unit(100, 64, 8, 3)
    sims_t, ids_t = TorchSearch(chunk_size=123).topk(queries, keys, 30)
    sims_f, ids_f = FaissSearch().topk(queries, keys, 30)
    assert torch.equal(ids_t, ids_f)
    torch.testing.assert_close(sims_t, sims_f, atol=1e-5, rtol=0)


def test_half_precision_ranks_nearly_alike() -> None:
    keys, queries = random_unit(3000, 64, 4), random_unit(40, 64, 5)
    sims, ids = TorchSearch(chunk_size=1000, half=True).topk(queries, keys, 10)
    assert sims.dtype == torch.float32
    _, ids_ref = brute_force(queries, keys, 10)
    assert (ids[:, 0] == ids_ref[:, 0]).float().mean() > 0.9


@pytest.mark.parametrize("backend", backends(), ids=lambda b: type(b).__name__)
def test_valid_restricts_the_search(backend) -> None:
    keys, queries = random_unit(200, 16, 6), random_unit(20, 16, 7)
    _sims, ids = backend.topk(queries, keys, 5, valid=60)
    assert (ids < 60).all()
    _, ids_ref = brute_force(queries, keys[:60], 5)
    assert torch.equal(ids, ids_ref)


@pytest.mark.parametrize("backend", backends(), ids=lambda b: type(b).__name__)
def test_k_larger_than_keys_raises(backend) -> None:
    keys, queries = random_unit(10, 8, 0), random_unit(3, 8, 1)
    with pytest.raises(ValueError, match=r"k=11.*bank smaller than k"):
        backend.topk(queries, keys, 11)
    with pytest.raises(ValueError, match=r"k=6"):
        backend.topk(queries, keys, 6, valid=5)


@needs_faiss
def test_ivf_is_exact_when_probing_every_cell() -> None:
    keys = clustered_unit(4000, 32, 10, 8)
    backend = FaissSearch(ivf_threshold=1000, nprobe=10_000)
    index = backend.build_ivf(keys)
    _sims, ids = backend.search_ivf(index, keys[:100], 5)
    _, ids_ref = brute_force(keys[:100], keys, 5)
    assert torch.equal(ids, ids_ref)


def test_backend_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(search_backend("torch"), TorchSearch)
    monkeypatch.setattr(search, "faiss_available", lambda: False)
    assert isinstance(search_backend("auto"), TorchSearch)
    with pytest.raises(ImportError, match=r"search\.backend.*nbr-contrast\[faiss\].*=torch"):
        search_backend("faiss")
    with pytest.raises(ValueError, match=r"annoy.*'auto', 'torch', 'faiss'"):
        search_backend("annoy")


def test_search_backend_from_plain_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = search_backend("torch", chunk_size=7, half=True)
    assert isinstance(backend, TorchSearch) and (backend.chunk_size, backend.half) == (7, True)
    monkeypatch.setattr(search, "faiss_available", lambda: False)
    assert isinstance(search_backend(), TorchSearch)
    with pytest.raises(ValueError, match=r"annoy"):
        search_backend("annoy")


@needs_faiss
def test_auto_prefers_faiss_when_installed() -> None:
    assert isinstance(search_backend("auto"), FaissSearch)


@needs_faiss
def test_search_backend_passes_faiss_settings() -> None:
    backend = search_backend("faiss", ivf_threshold=10, nprobe=3)
    assert isinstance(backend, FaissSearch) and (backend.ivf_threshold, backend.nprobe) == (10, 3)
