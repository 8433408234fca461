"""The collapse warning: one line, at the step the embeddings collapsed; silent otherwise."""

from __future__ import annotations

import warnings

import lightning as L
import torch
from torch import Tensor, nn

from nbr_contrast import NNCLR, NeighbourIndexCallback, ViewsDataModule

from ..plugin.user_code import TinyCIFAR

SMALL = {"proj_hidden_dim": 16, "pred_hidden_dim": 16, "proj_output_dim": 8, "queue_size": 64}


class OnePoint(nn.Module):
    """A projector that maps every input to the same point (a collapsed embedding)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.point = nn.Parameter(torch.randn(dim))
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.point.expand(x.shape[0], -1) + 0.0 * x.sum(dim=1, keepdim=True)


def fit(model: NNCLR, steps: int) -> list[str]:
    data = ViewsDataModule(TinyCIFAR("train", every=50), batch_size=16, num_workers=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        log_every_n_steps=1,
        callbacks=[NeighbourIndexCallback()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=data)
    return [str(w.message) for w in caught if "collapsed" in str(w.message)]


def test_a_collapsed_embedding_warns_once_naming_the_step() -> None:
    torch.manual_seed(0)
    model = NNCLR(backbone="resnet18", **SMALL)
    model.projector = OnePoint(8)
    lines = fit(model, steps=3)
    assert len(lines) == 1
    assert lines[0].startswith("NNCLR step 0: the embeddings have collapsed towards one point")
    assert "train/nbr/spread 0 < 0.05" in lines[0] and "temperature" in lines[0]


def test_a_healthy_run_is_silent() -> None:
    torch.manual_seed(0)
    assert fit(NNCLR(backbone="resnet18", **SMALL), steps=4) == []
