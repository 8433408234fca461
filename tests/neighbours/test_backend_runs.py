"""A run with search.backend=faiss and one with search.backend=torch find the same neighbours."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig

from nbr_contrast.neighbours.bank import NeighbourBank
from nbr_contrast.neighbours.search import FaissSearch, TorchSearch

from ..methods.helpers import fit_small

SMALL = [
    "method=nnclr",
    "method.proj_hidden_dim=64",
    "method.pred_hidden_dim=64",
    "method.proj_output_dim=32",
    "method.queue_size=48",
    "trainer.limit_train_batches=4",
    "data.batch_size=8",
]


def record_run(
    cfg: DictConfig, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[torch.Tensor], list[type]]:
    ids: list[torch.Tensor] = []
    backends: list[type] = []
    original = NeighbourBank.search

    def spy(self: NeighbourBank, *args, **kwargs):
        found = original(self, *args, **kwargs)
        ids.append(found.ids.clone())
        backends.append(type(self.backend))
        return found

    with monkeypatch.context() as patch:
        patch.setattr(NeighbourBank, "search", spy)
        fit_small(cfg)
    return ids, backends


def test_faiss_and_torch_runs_find_the_same_neighbours_step_for_step(
    tiny_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    faiss_ids, faiss_backends = record_run(tiny_cfg(*SMALL, "search=faiss"), monkeypatch)
    torch_ids, torch_backends = record_run(tiny_cfg(*SMALL, "search=torch"), monkeypatch)
    assert set(faiss_backends) == {FaissSearch} and set(torch_backends) == {TorchSearch}
    assert len(faiss_ids) == len(torch_ids) == 2 * 4  # two views, four steps
    for step, (a, b) in enumerate(zip(faiss_ids, torch_ids, strict=True)):
        assert torch.equal(a, b), f"search {step} differs"
