"""NNCLR on WebDataset shards over 2 gloo ranks with loader workers: each sample once in the epoch.

Both ranks run the real ``api.fit`` (Lightning's DDP over CPU processes, the two processes
started here as a cluster launcher would) and record the dataset indices of every training
batch they draw; the two ranks' indices must be disjoint and together cover
every sample.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

import pytest
import torch.multiprocessing as mp

from nbr_contrast import api
from nbr_contrast.data.datamodule import ViewsDataModule

from ..data.shard_files import write_shards
from ..runs import CPU_RUN, PX16, SMALL_NNCLR
from .helpers import WORLD, free_port

SHARDS = [8, 8, 8, 8, 8, 8, 8, 8]  # 2 ranks x 2 loader workers: 2 shards, 4 batches each


def _rank(local_rank: int, port: int, shards: str, val: str, out: str, shared: Any) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD),
        NODE_RANK="0",
        LOCAL_RANK=str(local_rank),
        RANK=str(local_rank),
    )
    seen: list[tuple[int, list[int]]] = []
    original = ViewsDataModule.on_after_batch_transfer

    def record(self: ViewsDataModule, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            seen.append((self.trainer.current_epoch, batch["sample_id"].tolist()))
        return original(self, batch, dataloader_idx)

    ViewsDataModule.on_after_batch_transfer = record  # type: ignore[method-assign]
    try:
        overrides = [
            *CPU_RUN,
            *PX16,
            *SMALL_NNCLR,
            "trainer=ddp_cpu",
            "trainer.devices=2",
            "search=torch",
            "data=webdataset",
            f"data.shards='{shards}'",
            f"data.val_shards='{val}'",
            "data.num_classes=3",
            "data.batch_size=4",
            "data.num_workers=2",
            "knn_report=false",
        ]
        api.fit(api.compose(overrides, output_dir=out))
        shared[local_rank] = {"seen": seen}
    except Exception:
        shared[local_rank] = {"error": traceback.format_exc()}


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[tuple[int, list[int]]]]:
    folder = tmp_path_factory.mktemp("shards_ddp")
    shards = write_shards(folder / "train", SHARDS)
    val = write_shards(folder / "val", [6])
    with mp.Manager() as manager:
        shared = manager.dict()
        args = (free_port(), shards, val, str(folder / "run"), shared)
        mp.spawn(_rank, args=args, nprocs=WORLD, join=True)
        results = dict(shared)
    for r in range(WORLD):
        assert "error" not in results[r], results[r]["error"]
    return {r: results[r]["seen"] for r in range(WORLD)}


def test_two_ranks_see_every_sample_once_in_the_epoch(
    seen: dict[int, list[tuple[int, list[int]]]],
) -> None:
    total = sum(SHARDS)
    per_rank = [[i for e, batch in seen[r] if e == 0 for i in batch] for r in seen]
    assert [len(p) for p in per_rank] == [total // WORLD] * WORLD
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(total))


def test_each_rank_reads_its_own_shards(seen: dict[int, list[tuple[int, list[int]]]]) -> None:
    for r, batches in seen.items():
        shards = {i // SHARDS[0] for _, batch in batches for i in batch}
        assert shards == {s for s in range(len(SHARDS)) if s % (WORLD * 2) // 2 == r}
