"""The sharded kNN on 2 gloo ranks equals the single-process kNN exactly.

Each rank holds a contiguous share of the training features (whole blocks of the torch
backend's key chunks, as :func:`~nbr_contrast.app.evaluation.knn_run.knn_shards` gives) and of the
test features. The same process first computes the single-process result on all features;
neighbours (similarities, labels, ids), predictions for every ``k`` and temperature, and
accuracies must be bitwise equal. The data holds exact duplicates with different labels on
both ranks, so ties at and across the ``k``-th place are decided by the global id.

The same holds end to end for the report's feature passes: each rank embeds its share of
real images (:func:`~nbr_contrast.app.evaluation.knn_run.knn_shards`, with 32-image key
blocks so the bank is split) and the accuracies equal one process's.
"""

from __future__ import annotations

import tempfile
import traceback
from functools import partial
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from nbr_contrast.app.build import build_datamodule, build_method
from nbr_contrast.app.evaluation import knn_run
from nbr_contrast.app.evaluation.knn_dist import (
    all_gather_rows,
    merge_ranks,
    sharded_knn_accuracies,
)
from nbr_contrast.monitors.knn import TopK, neighbour_chunks, votes
from nbr_contrast.neighbours.search import TorchSearch
from tests.distributed.helpers import WORLD, compose, free_port, init_gloo

KS = [10, 20, 100, 200]
TAUS = [0.07, 0.1]
CLASSES = 5
BLOCK = 8  # keys per matmul of the torch backend; rank shares are whole blocks
QUERY_CHUNK = 16


def data() -> dict[str, Tensor]:
    """250 training features (rows 200..239 duplicate rows 0..39, other labels), 37 tests."""
    g = torch.Generator().manual_seed(0)
    train = torch.randn(250, 8, generator=g)
    train[200:240] = train[:40]
    labels = torch.randint(0, CLASSES, (250,), generator=g)
    labels[200:240] = (labels[:40] + 1) % CLASSES
    test = torch.cat([train[:20], torch.randn(17, 8, generator=g)])  # 20 queries hit duplicates
    test_labels = torch.randint(0, CLASSES, (37,), generator=g)
    return {"train": train, "labels": labels, "test": test, "test_labels": test_labels}


def evaluate(d: dict[str, Tensor], train_rows: Any, test_rows: Any) -> dict[str, Any]:
    """Accuracies, neighbours and predictions from the given shares (all rows: one process)."""
    ids, tests = torch.as_tensor(list(train_rows)), torch.as_tensor(list(test_rows))
    train = (d["train"][ids], d["labels"][ids], ids)
    test = (d["test"][tests], d["test_labels"][tests], tests)
    backend = TorchSearch(chunk_size=BLOCK)
    accs = sharded_knn_accuracies(train, test, KS, TAUS, CLASSES, backend, QUERY_CHUNK)
    queries = all_gather_rows(test[0])[all_gather_rows(tests).argsort()]
    merge = partial(merge_ranks, k=max(KS))
    chunks = list(neighbour_chunks(*train[:2], queries, max(KS), QUERY_CHUNK, backend, ids, merge))
    found = TopK(*(torch.cat(t) for t in zip(*chunks, strict=True)))
    preds = {(t, k): votes(found, k, t, CLASSES).argmax(dim=1) for t in TAUS for k in KS}
    return {"accs": accs, "found": found, "preds": preds}


def report_of_images(overrides: list[str], out: str) -> dict[str, Any]:
    """The kNN report's accuracies of a seeded ResNet-18 on the tiny npz, and the shares."""
    cfg = compose([*overrides, "data.image_size=16"], out)
    torch.manual_seed(0)
    method, datamodule = build_method(cfg), build_datamodule(cfg)
    cpu = torch.device("cpu")
    pair = knn_run.knn_shards(method.backbone, datamodule, cpu, progress=False)
    assert pair is not None
    backend = knn_run.knn_backend(cfg.search, cpu)
    accs = knn_run.pair_accuracies(pair, [1, 5, 20], TAUS, datamodule.num_classes, backend)
    return {"accs": accs, "bank": pair[0].indices.tolist(), "test": pair[1].indices.tolist()}


def compare(local_rank: int, one: dict[str, Any], out: str, overrides: list[str]) -> dict[str, Any]:
    """This rank's sharded results next to the single-process ones."""
    share = knn_run.rank_share(range(250), BLOCK)
    two = evaluate(data(), share, knn_run.rank_share(range(37)))
    ragged = all_gather_rows(torch.ones(3, 4) if local_rank == 0 else torch.empty(0, 0))
    return {
        "share": (share[0], share[-1] + 1),
        "accs_equal": one["accs"] == two["accs"],
        "accs": two["accs"],
        "found_equal": all(map(torch.equal, one["found"], two["found"])),
        "preds_equal": all(torch.equal(one["preds"][key], p) for key, p in two["preds"].items()),
        "tie_ids": two["found"].ids[:20, :2].tolist(),
        "ragged": tuple(ragged.shape),
        "images_one": one["images"],
        "images_two": report_of_images(overrides, out),
    }


def _worker(local_rank: int, port: int, overrides: list[str], results: Any) -> None:
    torch.set_num_threads(1)
    knn_run.KEY_BLOCK = 32  # 100 bank images: ranks hold 64 and 36
    with tempfile.TemporaryDirectory() as out:
        try:
            one = evaluate(data(), range(250), range(37))
            one["images"] = report_of_images(overrides, out)
            init_gloo(local_rank, port)
        except Exception:
            results[local_rank] = {"error": traceback.format_exc()}
            return
        try:
            results[local_rank] = compare(local_rank, one, out, overrides)
        except Exception:
            results[local_rank] = {"error": traceback.format_exc()}
        finally:
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tiny_data: list[str]) -> dict[Any, Any]:
    """Both ranks' comparisons with the single-process results, keyed by rank."""
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(_worker, args=(free_port(), tiny_data, shared), nprocs=WORLD, join=True)
        return dict(shared)


def test_two_ranks_equal_one_process_exactly(results: dict[Any, Any]) -> None:
    for local_rank in range(WORLD):
        r = results[local_rank]
        assert "error" not in r, r.get("error")
        assert r["found_equal"] and r["preds_equal"] and r["accs_equal"], r
        assert set(r["accs"]) == set(TAUS) and all(list(a) == KS for a in r["accs"].values())
    assert results[0]["share"] == (0, 128) and results[1]["share"] == (128, 250)


def test_duplicates_across_ranks_tie_in_global_id_order(results: dict[Any, Any]) -> None:
    for local_rank in range(WORLD):
        assert results[local_rank]["tie_ids"] == [[i, 200 + i] for i in range(20)]


def test_rows_gathered_from_ranks_of_different_sizes(results: dict[Any, Any]) -> None:
    assert results[0]["ragged"] == results[1]["ragged"] == (3, 4)


def test_report_on_two_ranks_embeds_shares_and_equals_one_process(
    results: dict[Any, Any],
) -> None:
    one, two = results[0]["images_one"], [results[r]["images_two"] for r in range(WORLD)]
    assert one["bank"] == list(range(100)) and one["test"] == list(range(50))
    assert two[0]["bank"] == list(range(64)) and two[1]["bank"] == list(range(64, 100))
    assert two[0]["test"] + two[1]["test"] == list(range(50))
    assert two[0]["accs"] == two[1]["accs"] == one["accs"]
    assert set(one["accs"]) == set(TAUS)


@pytest.mark.parametrize(("n", "block"), [(250, 8), (7, 1), (1, 1), (4096, 4096), (13, 4)])
def test_rank_shares_cover_every_row_once(
    n: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows: list[int] = []
    for r in range(3):
        monkeypatch.setattr(knn_run, "rank", lambda r=r: r)
        monkeypatch.setattr(knn_run, "world_size", lambda: 3)
        share = list(knn_run.rank_share(range(n), block))
        assert not share or share[0] % block == 0
        rows += share
    assert rows == list(range(n))
