"""The own-Trainer path on 2 gloo ranks equals one process with twice the batch.

``L.Trainer(strategy="ddp_spawn", devices=2)`` on the CPU, each rank with per-device batch
B, against ``devices=1`` with batch 2B: the datamodule deals each rank its half of every
global batch, the learning rate follows the global batch (the same on both sides), NNCLR
gathers its predictions and the callback its global bank, DDP averages the gradients. As
in :mod:`tests.distributed.test_equivalence`, every BatchNorm is a ``GatheredBatchNorm``
(SyncBatchNorm refuses CPU tensors) and the tolerances are those of float32 sums taken in
another order: every parameter's update over the run matches elementwise within
``1e-4·max|Δ| + 1e-3·|Δ|``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn

from nbr_contrast import NNCLR, NeighbourIndexCallback, ViewsDataModule

from ..distributed.helpers import gathered_batchnorm
from .user_code import TinyCIFAR

B = 4
VIEWS = [{"size": 16}, {"size": 16, "solarize_p": 0.2}]


def small_cnn() -> nn.Module:
    """A user's backbone without BatchNorm (8-d features)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def train(devices: int, batch: int, root: Path) -> dict[str, torch.Tensor]:
    L.seed_everything(3)
    model = NNCLR(
        backbone=small_cnn(),
        num_classes=10,
        proj_hidden_dim=16,
        pred_hidden_dim=16,
        proj_output_dim=8,
        queue_size=32,
    )
    gathered_batchnorm(model)
    data = ViewsDataModule(
        TinyCIFAR("train", every=50), views=VIEWS, batch_size=batch, num_workers=0
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_epochs=1,
        limit_train_batches=3,
        callbacks=[NeighbourIndexCallback(backend="torch")],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=data)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_two_ranks_equal_one_process_with_twice_the_batch(tmp_path: Path) -> None:
    L.seed_everything(3)
    start = NNCLR(
        backbone=small_cnn(),
        num_classes=10,
        proj_hidden_dim=16,
        pred_hidden_dim=16,
        proj_output_dim=8,
        queue_size=32,
    )
    initial = gathered_batchnorm(start).state_dict()
    one = train(1, 2 * B, tmp_path / "one")
    two = train(2, B, tmp_path / "two")
    assert sorted(one) == sorted(two)
    params = [k for k, v in initial.items() if v.is_floating_point() and "running" not in k]
    updates = {k: one[k] - initial[k] for k in params}
    largest = max(float(u.abs().max()) for u in updates.values())
    assert largest > 0
    for k in params:
        delta_two = two[k] - initial[k]
        bound = 1e-4 * largest + 1e-3 * updates[k].abs()
        assert bool(((delta_two - updates[k]).abs() <= bound).all()), k
