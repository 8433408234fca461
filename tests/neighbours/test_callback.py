"""The callback's cross-rank semantics, with 2 CPU processes on gloo."""

from __future__ import annotations

import os
import socket
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nbr_contrast.neighbours.bank import PayloadSpec
from nbr_contrast.neighbours.callback import NeighbourIndexCallback
from nbr_contrast.neighbours.index import BankSpec

SIZE, DIM, BATCH = 8, 4, 3


class FakeMethod:
    """Just what the callback touches: declarations, the handle, and ``log``."""

    neighbours: Any = None

    def neighbour_specs(self) -> list[BankSpec]:
        payloads = {"label": PayloadSpec(), "sample_id": PayloadSpec()}
        return [
            BankSpec("shared", SIZE, DIM, payloads, scope="global", init="zeros"),
            BankSpec("own", SIZE, DIM, payloads, scope="rank", init="zeros"),
        ]

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass


def batch_for(rank: int, step: int) -> dict[str, torch.Tensor]:
    base = 100 * rank + 10 * step
    index = torch.arange(base, base + BATCH)
    emb = torch.nn.functional.normalize(torch.randn(BATCH, DIM), dim=1)
    return {"embeddings": emb, "label": index % 7, "sample_id": index}


def worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(rank)
    method = FakeMethod()
    callback = NeighbourIndexCallback(backend="torch")
    callback.build(method)
    for step in range(2):
        entries = batch_for(rank, step)
        outputs = {"enqueue": {"shared": entries, "own": entries}}
        callback.on_train_batch_end(None, method, outputs, None, step)  # type: ignore[arg-type]
    state = callback.state_dict()["banks"]
    out[rank] = {name: {k: v for k, v in s.items()} for name, s in state.items()}
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_global_bank_identical_across_ranks_and_rank_banks_differ() -> None:
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(worker, args=(free_port(), out), nprocs=2, join=True)
    r0, r1 = out[0], out[1]
    for key in ("embeddings", "label", "sample_id"):
        assert torch.equal(r0["shared"][key], r1["shared"][key])
    assert not torch.equal(r0["own"]["sample_id"], r1["own"]["sample_id"])
    # 2 steps x 2 ranks x 3 = 12 entries into a bank of 8: FIFO keeps the last 8 in
    # (step, rank) order with wrap-around; every index appears with its own label.
    idx = r0["shared"]["sample_id"]
    expected = [100 * r + 10 * s + i for s in range(2) for r in range(2) for i in range(3)]
    assert sorted(idx.tolist()) == sorted(expected[-SIZE:])
    assert torch.equal(r0["shared"]["label"], idx % 7)
    # the per-rank bank holds only that rank's entries
    assert all(i < 100 for i in r0["own"]["sample_id"].tolist() if i >= 0)
    assert all(i >= 100 for i in r1["own"]["sample_id"].tolist() if i >= 0)
