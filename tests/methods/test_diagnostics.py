"""Every neighbour method's diagnostics, from the same step's tensors, against slow references.

Each method takes one step (``method.step`` on a fixed batch, as a logging step) with a
bank that holds the batch's own earlier entries, written 5 steps ago, among random others:
those entries are the queries' nearest, so self-retrieval is 1 (0 with ``exclude_self``),
agreement 1, the age 5 and the top-1 similarity 1. NNCLR's diagnostics over a random bank
are checked against a search written as a Python loop, and computing the diagnostics reads
nothing back to the host.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nbr_contrast import CLIM, CO2, MSF, NNCLR, SNCLR, CoNe, NeighbourIndexCallback
from nbr_contrast.methods import BaseMethod
from nbr_contrast.methods.batch import TrainBatch
from nbr_contrast.neighbours.dataset_graph import DatasetGraph

from .test_host_waits import HostReads

B, STEP, WRITTEN = 6, 7, 2
HEADS = {"proj_hidden_dim": 16, "proj_output_dim": 8, "queue_size": 32}


def tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def batch() -> TrainBatch:
    g = torch.Generator().manual_seed(0)
    views = [torch.rand(B, 3, 16, 16, generator=g) for _ in range(3)]
    return TrainBatch(views, torch.tensor([0, 1, 2, 3, 0, 1]), torch.arange(100, 100 + B))


def ready(cls: type[BaseMethod], **kwargs: Any) -> BaseMethod:
    """The method at step ``STEP`` of epoch 1, its banks built, every step a logging step."""
    torch.manual_seed(0)
    method = cls(backbone=tiny(), num_classes=4, **kwargs)
    NeighbourIndexCallback(backend="torch").build(method)
    method._trainer = SimpleNamespace(global_step=STEP, current_epoch=1)
    method.logging_step = True
    return method


def prefill(method: BaseMethod, name: str, own: Tensor, data: TrainBatch) -> None:
    """Random entries, then the batch's own entries ``own`` written at step ``WRITTEN``."""
    bank = method.bank(name)
    g = torch.Generator().manual_seed(1)
    n = bank.size - B
    extra = {
        k: torch.full((n, *s.shape), 0.25 if k == "probs" else 3) for k, s in bank.specs.items()
    }
    extra["sample_id"] = torch.arange(n)
    bank.enqueue(F.normalize(torch.randn(n, bank.dim, generator=g), dim=1), step=0, **extra)
    payloads = {"label": data.labels, "sample_id": data.sample_ids}
    if "probs" in bank.specs:
        payloads["probs"] = torch.full((B, 4), 0.25)
    bank.enqueue(F.normalize(own, dim=1), step=WRITTEN, **payloads)


def assert_own_entries_found(logs: dict[str, Tensor], self_retrieval: float = 1.0) -> None:
    assert all(torch.isfinite(v) for v in logs.values())
    assert float(logs["nbr/self_retrieval"]) == pytest.approx(self_retrieval)
    assert float(logs["nbr/agreement"]) == pytest.approx(1.0)
    assert float(logs["nbr/age_mean"]) == pytest.approx(STEP - WRITTEN)
    assert float(logs["nbr/top1_sim"]) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= float(logs["nbr/spread"]) <= 2.0


@torch.no_grad()
def nnclr_query(method: NNCLR, data: TrainBatch) -> Tensor:
    return method.projector(method.features(data.views[0]))


@pytest.mark.parametrize("exclude", [False, True])
def test_nnclr_own_entries(exclude: bool) -> None:
    method = ready(NNCLR, pred_hidden_dim=16, exclude_self=exclude, **HEADS)
    data = batch()
    prefill(method, "support", nnclr_query(method, data), data)
    logs = method.step(data).logs
    if exclude:
        assert float(logs["nbr/self_retrieval"]) == 0.0
        assert float(logs["nbr/top1_sim"]) < 0.99
    else:
        assert_own_entries_found(logs)


def test_nnclr_diagnostics_match_a_search_written_as_a_loop() -> None:
    method = ready(NNCLR, pred_hidden_dim=16, **HEADS)
    data = batch()
    bank = method.bank("support")
    g = torch.Generator().manual_seed(3)
    bank.enqueue(
        F.normalize(torch.randn(bank.size, bank.dim, generator=g), dim=1),
        step=4,
        label=torch.randint(0, 4, (bank.size,), generator=g),
        sample_id=torch.randint(100, 100 + B, (bank.size,), generator=g),
    )
    query = F.normalize(nnclr_query(method, data), dim=1)
    logs = method.step(data).logs
    rows = []
    for i in range(B):
        sims = [float(query[i] @ bank.embeddings[j]) for j in range(bank.size)]
        rows.append(max(range(bank.size), key=lambda j: sims[j]))
    labels = bank.payloads["label"]
    ids = bank.payloads["sample_id"]
    agree = sum(int(labels[r]) == int(data.labels[i]) for i, r in enumerate(rows)) / B
    own = sum(int(ids[r]) == int(data.sample_ids[i]) for i, r in enumerate(rows)) / B
    top1 = sum(float(query[i] @ bank.embeddings[r]) for i, r in enumerate(rows)) / B
    assert float(logs["nbr/agreement"]) == pytest.approx(agree)
    assert float(logs["nbr/self_retrieval"]) == pytest.approx(own)
    assert float(logs["nbr/age_mean"]) == pytest.approx(STEP - 4)
    assert float(logs["nbr/top1_sim"]) == pytest.approx(top1, abs=1e-6)


@pytest.mark.parametrize("exclude", [False, True])
def test_co2_own_keys(exclude: bool) -> None:
    method = ready(CO2, exclude_self=exclude, **HEADS)
    data = batch()
    with torch.no_grad():
        own = method.projector(method.features(data.views[0]))
    prefill(method, "queue", own, data)
    logs = method.step(data).logs
    if exclude:
        assert float(logs["nbr/self_retrieval"]) == 0.0
    else:
        assert_own_entries_found(logs)


def test_snclr_own_keys() -> None:
    method = ready(SNCLR, pred_hidden_dim=16, k=2, exclude_self=False, **HEADS)
    data = batch()
    prefill(method, "support", method.keys(data.views[1]), data)
    logs = method.step(data).logs
    assert float(logs["nbr/self_retrieval"]) == pytest.approx(0.5)  # own key among 2
    assert float(logs["nbr/top1_sim"]) == pytest.approx(1.0, abs=1e-5)
    assert "nbr/weighted_agreement" in logs


def test_cone_own_entries() -> None:
    method = ready(CoNe, k=1, exclude_self=False, **{**HEADS, "queue_size": 32})
    data = batch()
    with torch.no_grad():
        own = method.student(data.views[0])[1]
    prefill(method, "queue", own, data)
    assert_own_entries_found(method.step(data).logs)


def test_msf_counts_only_the_memorys_earlier_entries() -> None:
    method = ready(MSF, k=3, **HEADS)
    data = batch()
    prefill(method, "memory", method.keys(data.views[1]), data)
    logs = method.step(data).logs
    # of each target's 3 neighbours: the target itself (from the batch, not counted) and
    # its own earlier entry in the memory (counted)
    assert float(logs["nbr/self_retrieval"]) == pytest.approx(1 / 3)
    assert float(logs["nbr/top1_sim"]) == pytest.approx(1.0, abs=1e-5)


def test_clim_served_neighbours() -> None:
    method = ready(CLIM, k=2, **HEADS)
    data = batch()
    n = 200
    method.neighbours.dataset_graph = DatasetGraph(
        embeddings=torch.zeros(n, 8),
        knn_ids=torch.zeros(n, 2, dtype=torch.long),
        knn_sims=torch.zeros(n, 2),
        labels=torch.arange(n) % 4,
        built_at_step=WRITTEN,
    )
    served = data.sample_ids.clone()
    served[:3] += 4  # another image of the same class (labels are id % 4)
    logs = method.served_logs(data.labels, data.sample_ids, served)
    assert float(logs["nbr/self_retrieval"]) == pytest.approx(0.5)
    assert float(logs["nbr/agreement"]) == pytest.approx(
        float(((data.sample_ids + 4) % 4 == data.labels).float().mean())
    )
    assert float(logs["nbr/age_mean"]) == STEP - WRITTEN


@pytest.mark.parametrize("cls", [NNCLR, CO2, SNCLR, CoNe, MSF])
def test_diagnostics_read_nothing_back(cls: type[BaseMethod]) -> None:
    extra: dict[str, Any] = {"pred_hidden_dim": 16} if cls in (NNCLR, SNCLR) else {}
    if cls in (CoNe, MSF):
        extra["k"] = 2
    method = ready(cls, **extra, **HEADS)
    data = batch()
    mode = HostReads()
    with mode:
        mode.counting = True
        logs = method.step(data).logs
    assert mode.reads == 0
    assert "nbr/spread" in logs
