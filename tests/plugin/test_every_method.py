"""Every method and baseline in a user's own ``Trainer``: a module backbone, a plain dataset.

The user's script: torchvision's ResNet-18 *module*, a map-style dataset of the package's
images (:mod:`tests.plugin.user_code`), ``ViewsDataModule`` with the method's view recipe and
``L.Trainer(callbacks=[NeighbourIndexCallback()])``. Two short epochs on the CPU must give a
finite loss, fill every bank the method declares, and change every parameter that trains.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch

from nbr_contrast import (
    BYOL,
    CLIM,
    CO2,
    MSF,
    NNCLR,
    SNCLR,
    CoNe,
    MoCoV2,
    MoCoV3,
    NeighbourIndexCallback,
    Supervised,
    ViewsDataModule,
)
from nbr_contrast.methods import BaseMethod

from .user_code import TinyCIFAR, resnet18

HEADS = {"proj_hidden_dim": 64, "proj_output_dim": 32}
PRED = {"pred_hidden_dim": 64}
QUEUE = {"queue_size": 64}
CLIM_GRAPH = {"n_clusters": 5, "k": 3, "warmup_epochs": 1, "refresh_every": 1}
CASES: dict[str, tuple[type[BaseMethod], dict[str, Any]]] = {
    "nnclr": (NNCLR, {**HEADS, **PRED, **QUEUE}),
    "nnclr_baseline": (NNCLR, {**HEADS, **PRED, **QUEUE, "use_nn": False}),
    "co2": (CO2, {**HEADS, **QUEUE}),
    "mocov2": (MoCoV2, {**HEADS, **QUEUE}),
    "snclr": (SNCLR, {**HEADS, **PRED, **QUEUE, "k": 3}),
    "mocov3": (MoCoV3, {**HEADS, **PRED}),
    "clim": (CLIM, {**HEADS, **QUEUE, **CLIM_GRAPH}),
    "cone": (CoNe, {**HEADS, "k": 8}),
    "supervised": (Supervised, HEADS),
    "msf": (MSF, {**HEADS, **QUEUE, "k": 3}),
    "byol": (BYOL, HEADS),
}
BATCH = 16
STEPS = 2  # per epoch


@pytest.fixture(scope="module")
def images() -> tuple[TinyCIFAR, TinyCIFAR]:
    return TinyCIFAR("train", every=50), TinyCIFAR("test", every=20)


@pytest.mark.parametrize("case", sorted(CASES))
def test_trains_in_a_users_trainer(case: str, images: tuple[TinyCIFAR, TinyCIFAR]) -> None:
    cls, kwargs = CASES[case]
    L.seed_everything(0)
    model = cls(backbone=resnet18(), num_classes=10, **kwargs)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train, test = images
    data = ViewsDataModule(
        train, test, views=cls.view_recipe, batch_size=BATCH, eval_batch_size=64, num_workers=0
    )
    index = NeighbourIndexCallback()
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=STEPS,
        limit_val_batches=1,
        accelerator="cpu",
        callbacks=[index],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 2 * STEPS
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
    assert index.index is not None and model.neighbours is index.index
    declared = [spec.name for spec in model.neighbour_specs()]
    assert sorted(index.index.banks) == sorted(declared)
    for name, bank in index.index.banks.items():
        filled = int((bank.payloads["sample_id"] >= 0).sum())
        entries = 2 if cls in (CO2, MoCoV2, CLIM) else 1  # both views' keys per sample
        assert filled == min(bank.size, 2 * STEPS * BATCH * entries), name
    unchanged = [
        n for n, p in model.named_parameters() if n in before and torch.equal(p, before[n])
    ]
    assert not unchanged, f"{case}: parameters that did not learn: {unchanged[:5]}"
    if cls is CLIM:
        assert index.index.dataset_graph is not None and data.serving_neighbours
