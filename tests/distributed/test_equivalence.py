"""One training step on 2 ranks with batch B equals one process with batch 2B.

For every method, two gloo processes on CPU each take a contiguous half of a fixed batch
of 2B = 8 samples and run the method's real ``training_step`` (loss, probe, enqueue
outputs), backward, DDP's gradient average (all-reduce / W) and one SGD step; the
neighbour-index callback then enqueues the step. The same process first runs the same
step alone on all 8 samples. Both sides start from the same seeded weights and identical
pre-filled banks (so neighbour terms see real labels and probabilities).

BatchNorm: torch's SyncBatchNorm refuses CPU tensors, so both sides replace every BN by
``helpers.GatheredBatchNorm`` (train-mode statistics over the batch of every rank, what
SyncBN does on GPUs; plain BN on one process). ResNet-18 runs on 8 px images (4 px for
CLIM's extra multi-resolution view) to keep the step cheap.

Tolerances (float32): loss ``rtol=1e-5``; every parameter update
``|Δ_2 - Δ_1| <= 1e-4·max|Δ_1| + 1e-3·|Δ_1|`` elementwise, where ``max|Δ_1|`` is the largest
update of the whole model. Banks after the step: global banks are bitwise identical on both
ranks and hold the single-process entries (up to order and 1e-5); SNCLR's
``bank_scope=rank`` bank holds only the rank's own keys, so the ranks' banks differ.

Per-rank behaviour that differs by design and is therefore tested as such: SNCLR with
``bank_scope=rank`` (see above); CO2/CLIM enqueue ``[k1, k2]`` per rank, so the gathered
queue interleaves ranks and views in a different order than one process (same entries).
"""

from __future__ import annotations

import tempfile
import traceback
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.distributed.helpers import (
    WORLD,
    build,
    compose,
    free_port,
    init_gloo,
    make_batch,
    same_on_all_ranks,
    shard,
    train_step,
)

B = 4
LR = 0.5
LOSS_RTOL = 1e-5
UPDATE_ATOL = 1e-4  # times the largest update of the model
UPDATE_RTOL = 1e-3
BANK_ATOL = 1e-5
VIEWS = "data.views=[{size:8},{size:8}]"
HEADS = ["method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.queue_size=64"]
PRED = ["method.pred_hidden_dim=32"]

CASES: dict[str, tuple[list[str], list[int]]] = {
    "nnclr": (["method=nnclr", *HEADS, *PRED, VIEWS], [8, 8]),
    "co2": (["method=co2", *HEADS, VIEWS], [8, 8]),
    "snclr": (["method=snclr", *HEADS, *PRED, "method.k=3", VIEWS], [8, 8]),
    "msf": (["method=msf", *HEADS, "method.k=3", VIEWS], [8, 8]),
    # before its warm-up CLIM is MoCo v2 plus the multi-resolution query (third view)
    "clim": (["method=clim", *HEADS, "data.views=[{size:8},{size:8},{size:4}]"], [8, 8, 4]),
    # the neighbour phase (epoch >= 1 in a real run) from the first step
    "cone": (
        [
            "method=cone",
            *HEADS,
            "method.k=8",
            "method.ce_only_epochs=0",
            "data.views=[{size:8,crop:pad}]",
        ],
        [8],
    ),
}
RANK_SCOPE = "snclr_rank"
RANK_SCOPE_CASE = (
    ["method=snclr", *HEADS, *PRED, "method.k=3", "method.bank_scope=rank", VIEWS],
    [8, 8],
)


def _run(overrides: list[str], sizes: list[int], out: str, local_rank: int | None) -> Any:
    cfg = compose(overrides, out)
    method, callback = build(cfg, prefill=64)
    batch = make_batch(sizes, WORLD * B)
    return train_step(
        method, callback, batch if local_rank is None else shard(batch, local_rank), LR
    )


def _match_rows(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> bool:
    """Whether two banks hold the same rows (embedding within BANK_ATOL, equal payloads)."""
    dist_ = torch.cdist(
        ref["embeddings"], got["embeddings"], compute_mode="donot_use_mm_for_euclid_dist"
    )
    match = dist_.argmin(dim=1)
    if len(set(match.tolist())) != len(match) or dist_.min(dim=1).values.max() > BANK_ATOL:
        return False
    return all(
        torch.allclose(ref[k], got[k][match], atol=BANK_ATOL) for k in ref if k != "embeddings"
    )


def _compare(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    scale = max(float(u.abs().max()) for u in ref["updates"].values())
    worst, worst_name, ok = 0.0, "", True
    for name, u in ref["updates"].items():
        diff = (got["updates"][name] - u).abs()
        ok &= bool((diff <= UPDATE_ATOL * scale + UPDATE_RTOL * u.abs()).all())
        if float(diff.max()) > worst:
            worst, worst_name = float(diff.max()), name
    banks = {
        name: {
            "same_on_ranks": all(same_on_all_ranks(t) for t in bank.values()),
            "matches_one_process": _match_rows(ref["banks"][name], bank),
        }
        for name, bank in got["banks"].items()
    }
    return {
        "loss_one": ref["loss"],
        "loss_two": got["loss"],
        "updates_close": ok,
        "max_update": scale,
        "max_update_diff": worst,
        "worst_param": worst_name,
        "banks": banks,
    }


def _rank_scope(got: dict[str, Any], local_rank: int) -> dict[str, Any]:
    bank = got["banks"]["support"]
    own = set(range(1000 + local_rank * B, 1000 + (local_rank + 1) * B))
    written = {i for i in bank["sample_id"].tolist() if i >= 1000}
    return {
        "holds_only_own_keys": written == own,
        "same_on_ranks": same_on_all_ranks(bank["embeddings"]),
    }


def _worker(local_rank: int, port: int, results: Any) -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        refs: dict[str, Any] = {}
        for name, (overrides, sizes) in CASES.items():
            try:
                refs[name] = _run(overrides, sizes, out, None)
            except Exception:
                refs[name] = traceback.format_exc()
        init_gloo(local_rank, port)
        try:
            for name, (overrides, sizes) in CASES.items():
                try:
                    if isinstance(refs[name], str):
                        raise RuntimeError(f"one-process step failed:\n{refs[name]}")
                    got = _run(overrides, sizes, out, local_rank)
                    results[(name, local_rank)] = _compare(refs[name], got)
                except Exception:
                    results[(name, local_rank)] = {"error": traceback.format_exc()}
            try:
                got = _run(*RANK_SCOPE_CASE, out, local_rank)
                results[(RANK_SCOPE, local_rank)] = _rank_scope(got, local_rank)
            except Exception:
                results[(RANK_SCOPE, local_rank)] = {"error": traceback.format_exc()}
        finally:
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def results() -> dict[Any, Any]:
    """Run every case on 2 processes once; per-case results keyed by (case, rank)."""
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(_worker, args=(free_port(), shared), nprocs=WORLD, join=True)
        return dict(shared)


@pytest.mark.parametrize("method", list(CASES))
def test_two_ranks_match_one_process(results: dict[Any, Any], method: str) -> None:
    for local_rank in range(WORLD):
        r = results[(method, local_rank)]
        assert "error" not in r, r.get("error")
        assert r["loss_two"] == pytest.approx(r["loss_one"], rel=LOSS_RTOL), r
        assert r["updates_close"], r
        for name, bank in r["banks"].items():
            assert bank["same_on_ranks"], (name, r)
            assert bank["matches_one_process"], (name, r)


def test_snclr_rank_scope_bank_is_per_rank(results: dict[Any, Any]) -> None:
    for local_rank in range(WORLD):
        r = results[(RANK_SCOPE, local_rank)]
        assert "error" not in r, r.get("error")
        assert r["holds_only_own_keys"], r
        assert not r["same_on_ranks"], r
