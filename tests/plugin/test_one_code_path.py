"""One code path: the CLI and a user's own ``Trainer`` script train the very same weights.

The CLI composes the run config and instantiates the library's classes from it; the script
builds the same classes by hand, with the same seed, the same images (the CLI reads them
from ``.npz`` archives, the script from a user's PIL dataset of the same images), the same
hyper-parameters and the Trainer settings the CLI uses (``num_sanity_val_steps=0``). After
two epochs every tensor of the model's state (weights, BatchNorm statistics, momentum
copies) must be equal, bit for bit: NNCLR, CoNe, and CLIM with its kNN graph, clusters and
neighbour mixing running in the second epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from nbr_contrast import CLIM, NNCLR, CoNe, NeighbourIndexCallback, ViewsDataModule
from nbr_contrast.methods import BaseMethod

from ..runs import run_cli
from .user_code import TinyCIFAR

SEED = 7
CLI = [
    f"seed={SEED}",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "logger.tensorboard=false",
    "data.batch_size=16",
    "data.eval_batch_size=64",
    "data.num_workers=0",
    "knn_report=false",
    "plots=false",
    "method.knn_k=10",
]
HEADS = {"proj_hidden_dim": 64, "proj_output_dim": 32}
CASES: dict[str, tuple[type[BaseMethod], dict[str, Any]]] = {
    "nnclr": (NNCLR, {**HEADS, "pred_hidden_dim": 64, "queue_size": 64}),
    "cone": (CoNe, {**HEADS, "k": 8}),
    "clim": (
        CLIM,
        {**HEADS, "queue_size": 64, "n_clusters": 5, "k": 3, "warmup_epochs": 1},
    ),
}


def own_trainer(cls: type[BaseMethod], kwargs: dict[str, Any]) -> BaseMethod:
    """The user's script."""
    L.seed_everything(SEED, workers=True)
    model = cls(num_classes=10, knn_k=10, **kwargs)
    data = ViewsDataModule(
        TinyCIFAR("train", every=50),
        TinyCIFAR("test", every=20),
        views=cls.view_recipe,
        batch_size=16,
        eval_batch_size=64,
        num_workers=0,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[NeighbourIndexCallback()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, datamodule=data)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_and_own_trainer_give_identical_weights(
    case: str, tmp_path: Path, mini_npz: Callable[[int, int], list[str]]
) -> None:
    cls, kwargs = CASES[case]
    method = [f"method={case}", *(f"method.{k}={v}" for k, v in kwargs.items())]
    out = tmp_path / "cli"
    proc = run_cli([*CLI, *mini_npz(50, 20), *method, f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    cli_state = saved["state_dict"]
    state = own_trainer(cls, kwargs).state_dict()
    assert sorted(state) == sorted(cli_state)
    different = [k for k in state if not torch.equal(state[k], cli_state[k])]
    assert not different, f"{case}: {len(different)} tensors differ, e.g. {different[:5]}"
    assert saved["global_step"] == 4
