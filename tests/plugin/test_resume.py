"""``trainer.fit(..., ckpt_path=...)`` in a user's own Trainer continues bit-exactly.

Banks and the dataset graph travel in the callback's state, the kNN monitor's epoch so far
in the method's, the loader position in the datamodule's: a run stopped after any step and
resumed from its checkpoint ends with the same weights and banks as the run that never
stopped, at an epoch's end and in the middle of an epoch.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from nbr_contrast import NNCLR, NeighbourIndexCallback, ViewsDataModule

from .user_code import TinyCIFAR, resnet18

STEPS = 3  # per epoch


def run(root: Path, epochs: int, ckpt: Path | None = None) -> tuple[NNCLR, NeighbourIndexCallback]:
    L.seed_everything(11)
    model = NNCLR(
        backbone=resnet18(),
        num_classes=10,
        knn_k=10,
        proj_hidden_dim=32,
        pred_hidden_dim=32,
        proj_output_dim=16,
        queue_size=40,
    )
    data = ViewsDataModule(
        TinyCIFAR("train", every=50),
        TinyCIFAR("test", every=20),
        views="byol",
        batch_size=8,
        num_workers=0,
    )
    index = NeighbourIndexCallback()
    every_step = ModelCheckpoint(
        dirpath=root, filename="{step}", every_n_train_steps=1, save_top_k=-1
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=STEPS,
        limit_val_batches=1,
        callbacks=[index, every_step],
        logger=False,
        enable_progress_bar=False,
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt)
    return model, index


@pytest.mark.parametrize("stop", [STEPS, STEPS + 1])  # an epoch's end, then mid-epoch
def test_resume_from_a_checkpoint_is_bit_exact(stop: int, tmp_path: Path) -> None:
    straight, index = run(tmp_path / "straight", epochs=2)
    ckpt = tmp_path / "straight" / f"step={stop}.ckpt"
    resumed, resumed_index = run(tmp_path / "resumed", epochs=2, ckpt=ckpt)
    a, b = straight.state_dict(), resumed.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    for name, bank in index.index.banks.items():
        other = resumed_index.index.bank(name)
        assert torch.equal(bank.embeddings, other.embeddings)
        assert torch.equal(bank.payloads["sample_id"], other.payloads["sample_id"])
