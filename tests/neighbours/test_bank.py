"""NeighbourBank: FIFO with payloads, exact self-exclusion, full similarities, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn.functional import normalize

from nbr_contrast.neighbours import search
from nbr_contrast.neighbours.bank import NeighbourBank, PayloadSpec
from nbr_contrast.neighbours.search import FaissSearch, TorchSearch

from ..runs import run_python

PAYLOADS = {
    "label": PayloadSpec(),
    "sample_id": PayloadSpec(),
    "probs": PayloadSpec((3,), torch.float32, 1 / 3),
}


def make_bank(size: int = 8, dim: int = 4, **kwargs) -> NeighbourBank:
    return NeighbourBank("support", size, dim, PAYLOADS, **kwargs)


def entries(indices: torch.Tensor, dim: int = 4) -> dict[str, torch.Tensor]:
    """Entries whose embedding, label and probabilities all encode the dataset index."""
    gen = torch.Generator().manual_seed(int(indices.sum()))
    emb = normalize(torch.randn(len(indices), dim, generator=gen), dim=1)
    emb[:, 0] = indices.float()  # recoverable from the stored row
    probs = torch.stack([indices.float(), indices.float() * 2, indices.float() * 3], dim=1)
    return {"embeddings": emb, "label": indices * 10, "sample_id": indices, "probs": probs}


def test_initial_state() -> None:
    bank = make_bank(init="random")
    torch.testing.assert_close(bank.embeddings.norm(dim=1), torch.ones(8))
    assert torch.equal(bank.payloads["label"], torch.full((8,), -1))
    torch.testing.assert_close(bank.payloads["probs"], torch.full((8, 3), 1 / 3))
    assert (bank.ptr, bank.num_seen, bank.num_valid, bank.is_full, len(bank)) == (0, 0, 0, False, 8)
    assert torch.equal(make_bank(init="zeros").embeddings, torch.zeros(8, 4))


def test_payloads_follow_embeddings_through_wrap_around() -> None:
    bank = make_bank()
    written: list[int] = []
    for n in (3, 5, 7):
        batch = torch.arange(len(written), len(written) + n)
        bank.enqueue(**entries(batch))
        written += batch.tolist()
        for row in range(bank.num_valid):
            i = int(bank.embeddings[row, 0])
            assert int(bank.payloads["sample_id"][row]) == i
            assert int(bank.payloads["label"][row]) == 10 * i
            torch.testing.assert_close(
                bank.payloads["probs"][row], torch.tensor([i, 2 * i, 3 * i]).float()
            )
    assert (bank.ptr, bank.num_seen, bank.is_full) == (15 % 8, 15, True)
    assert sorted(bank.payloads["sample_id"].tolist()) == written[-8:]
    # FIFO positions: entry j was written at row j % 8.
    assert all(int(bank.payloads["sample_id"][j % 8]) == j for j in written[-8:])


def test_batch_larger_than_bank_keeps_last_rows_in_place() -> None:
    bank = make_bank()
    bank.enqueue(**entries(torch.arange(3)))
    bank.enqueue(**entries(torch.arange(3, 23)))
    assert bank.ptr == 23 % 8 and bank.num_seen == 23
    assert all(int(bank.payloads["sample_id"][j % 8]) == j for j in range(15, 23))
    assert torch.equal(bank.embeddings[:, 0], bank.payloads["sample_id"].float())


def test_enqueue_detaches_and_converts() -> None:
    bank = make_bank()
    batch = entries(torch.arange(2))
    batch["embeddings"] = batch["embeddings"].double().requires_grad_()
    bank.enqueue(**batch)
    assert bank.embeddings.dtype == torch.float32 and not bank.embeddings.requires_grad


def test_enqueue_errors_name_bank_and_payload() -> None:
    bank = make_bank()
    batch = entries(torch.arange(2))
    del batch["probs"]
    with pytest.raises(ValueError, match=r"'support'.*'probs'"):
        bank.enqueue(**batch)
    batch = entries(torch.arange(2))
    batch["label"] = torch.arange(3)
    with pytest.raises(ValueError, match=r"'support'.*'label'"):
        bank.enqueue(**batch)
    with pytest.raises(ValueError, match=r"'support'.*'extra'"):
        bank.enqueue(**entries(torch.arange(2)), extra=torch.arange(2))


def backends() -> list:
    found = [TorchSearch(chunk_size=5)]
    if search.faiss_available():
        found.append(FaissSearch())
    return found


@pytest.mark.parametrize("backend", backends(), ids=lambda b: type(b).__name__)
def test_search_returns_rows_with_payloads(backend) -> None:
    bank = NeighbourBank("b", 64, 16, PAYLOADS, backend=backend)
    emb = normalize(torch.randn(64, 16), dim=1)
    idx = torch.arange(64)
    bank.enqueue(emb, label=idx * 10, sample_id=idx, probs=torch.rand(64, 3))
    queries = normalize(torch.randn(5, 16), dim=1)
    found = bank.search(queries, k=4)
    ref = (queries @ emb.T).topk(4, dim=1)
    assert torch.equal(found.ids, ref.indices)
    torch.testing.assert_close(found.sims, ref.values, atol=1e-5, rtol=0)
    assert torch.equal(found.embeddings, emb[ref.indices])
    assert torch.equal(found.payloads["label"], ref.indices * 10)
    assert found.payloads["probs"].shape == (5, 4, 3)


def test_searches_are_timed_only_when_asked() -> None:
    bank = make_bank(size=16)
    queries = normalize(torch.randn(3, 4), dim=1)
    bank.search(queries, k=2)
    assert bank.timers == [] and bank.take_search_ms() == 0.0
    bank.timed = True
    bank.search(queries, k=2)
    bank.search(queries, k=2)
    assert len(bank.timers) == 2
    assert bank.take_search_ms() > 0 and bank.timers == []


@pytest.mark.parametrize("backend", backends(), ids=lambda b: type(b).__name__)
def test_exclude_ids_is_exact_with_duplicates(backend) -> None:
    dim = 8
    bank = NeighbourBank("b", 32, dim, PAYLOADS, backend=backend)
    queries = normalize(torch.randn(2, dim), dim=1)
    own = torch.tensor([5, 9])
    # Query 0's own sample appears 6 times, as its closest entries; query 1's 3 times.
    near0 = normalize(queries[0] + 0.01 * torch.randn(6, dim), dim=1)
    near1 = normalize(queries[1] + 0.01 * torch.randn(3, dim), dim=1)
    others = normalize(torch.randn(23, dim), dim=1)
    emb = torch.cat([near0, near1, others])
    idx = torch.cat([torch.full((6,), 5), torch.full((3,), 9), torch.arange(100, 123)])
    bank.enqueue(emb, label=idx, sample_id=idx, probs=torch.rand(32, 3))
    found = bank.search(queries, k=4, exclude_ids=own)
    assert not (found.payloads["sample_id"] == own[:, None]).any()
    scores = queries @ emb.T
    scores[idx[None, :] == own[:, None]] = float("-inf")
    ref = scores.topk(4, dim=1)
    assert torch.equal(found.ids, ref.indices)
    torch.testing.assert_close(found.sims, ref.values, atol=1e-5, rtol=0)
    if isinstance(backend, TorchSearch):
        # masked on the device: missing neighbours come back with -inf similarity
        short = bank.search(queries, k=27, exclude_ids=own)
        assert torch.isinf(short.sims[0, 26:]).all() and torch.isfinite(short.sims[1]).all()
    else:
        with pytest.raises(ValueError, match=r"k=27"):
            bank.search(queries, k=27, exclude_ids=own)


def test_only_filled_and_k_errors() -> None:
    bank = make_bank(size=16)
    bank.enqueue(**entries(torch.arange(5)))
    found = bank.search(normalize(torch.randn(3, 4), dim=1), k=5, only_filled=True)
    assert (found.ids < 5).all()
    with pytest.raises(ValueError, match=r"k=6.*bank smaller than k"):
        bank.search(normalize(torch.randn(3, 4), dim=1), k=6, only_filled=True)
    with pytest.raises(ValueError, match=r"k=17"):
        bank.search(normalize(torch.randn(3, 4), dim=1), k=17)


def test_exclude_needs_index_payload() -> None:
    bank = NeighbourBank("plain", 8, 4)
    with pytest.raises(ValueError, match=r"'plain'.*'sample_id'"):
        bank.search(normalize(torch.randn(2, 4), dim=1), k=1, exclude_ids=torch.arange(2))


def test_similarities_match_brute_force_and_carry_gradient() -> None:
    bank = make_bank(size=16)
    queries = normalize(torch.randn(3, 4), dim=1).requires_grad_()
    sims = bank.similarities(queries)
    torch.testing.assert_close(sims, queries @ bank.embeddings.T)
    sims.sum().backward()
    assert queries.grad is not None


def test_state_round_trip_through_torch_save(tmp_path: Path) -> None:
    bank = make_bank()
    for n in (3, 5, 7):
        bank.enqueue(**entries(torch.arange(n) + 100 * n))
    state = bank.state_dict()
    assert all(t.device.type == "cpu" for t in state.values() if isinstance(t, torch.Tensor))
    path = tmp_path / "bank.pt"
    torch.save(state, path)
    fresh = make_bank(init="zeros")
    fresh.load_state_dict(torch.load(path))
    assert (fresh.ptr, fresh.num_seen) == (bank.ptr, bank.num_seen)
    assert torch.equal(fresh.embeddings, bank.embeddings)
    for key in PAYLOADS:
        assert torch.equal(fresh.payloads[key], bank.payloads[key])
    state["embeddings"].zero_()  # the state is a copy, not a view of the bank
    assert bank.embeddings.abs().sum() > 0
    fresh.enqueue(**entries(torch.arange(2)))  # loading did not alias the saved tensors
    assert not torch.equal(fresh.embeddings, torch.load(path)["embeddings"])


def test_state_mismatch_names_bank_and_setting() -> None:
    state = make_bank(size=8).state_dict()
    with pytest.raises(ValueError, match=r"'support'.*queue size"):
        make_bank(size=16).load_state_dict(state)
    with pytest.raises(ValueError, match=r"'support'.*dimension"):
        make_bank(dim=5).load_state_dict(state)
    other = NeighbourBank("support", 8, 4, {**PAYLOADS, "probs": PayloadSpec((4,), torch.float32)})
    with pytest.raises(ValueError, match=r"'support'.*'probs'"):
        other.load_state_dict(state)
    del state["label"]
    with pytest.raises(ValueError, match=r"'support'.*'label'"):
        make_bank().load_state_dict(state)


def test_to_returns_self() -> None:
    bank = make_bank()
    assert bank.to("cpu") is bank and bank.device.type == "cpu"


# Builds a bank from plain arguments in a fresh interpreter, wraps it around once, and searches
# for noisy copies of stored entries; prints what it found and which frameworks got imported.
STANDALONE = """
import json, sys, torch
from torch.nn.functional import normalize
from nbr_contrast.neighbours.bank import NeighbourBank, PayloadSpec
from nbr_contrast.neighbours.search import search_backend

torch.manual_seed(0)
bank = NeighbourBank(
    "plain", size=32, dim=16, payloads={"label": PayloadSpec()},
    backend=search_backend("torch", chunk_size=5),
)
emb = normalize(torch.randn(40, 16), dim=1)
for rows in torch.arange(40).split(8):
    bank.enqueue(emb[rows], label=rows * 10)
wanted = torch.tensor([8, 20, 39])
found = bank.search(normalize(emb[wanted] + 0.01 * torch.randn(3, 16), dim=1), k=1)
frameworks = {"lightning", "pytorch_lightning", "hydra", "omegaconf"} & set(sys.modules)
print(json.dumps({
    "nearest": [int((emb - row).abs().sum(1).argmin()) for row in found.embeddings[:, 0]],
    "labels": found.payloads["label"][:, 0].tolist(),
    "num_valid": bank.num_valid,
    "frameworks": sorted(frameworks),
}))
"""


def test_bank_from_plain_arguments_needs_no_framework() -> None:
    out = json.loads(run_python(["-c", STANDALONE]).stdout)
    assert out["nearest"] == [8, 20, 39]  # the stored entry each noisy query came from
    assert out["labels"] == [80, 200, 390]  # its payload, aligned after the wrap-around
    assert out["num_valid"] == 32
    assert out["frameworks"] == []
