"""Tiny runs for the reliability tests on the 100-image npz of ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from nbr_contrast import api

SMALL = [
    "method=nnclr",
    "method.proj_hidden_dim=64",
    "method.pred_hidden_dim=64",
    "method.proj_output_dim=32",
    "method.queue_size=48",
    "method.knn_k=5",
]
TINY = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger.tensorboard=false",
    "data.batch_size=16",
    "data.image_size=16",
    "data.views=[{size:16},{size:16}]",
    "data.eval_batch_size=64",
    "data.num_workers=0",
    "optim.warmup_epochs=0",
    "plots=false",
]


@pytest.fixture
def run_cfg(tiny_data: list[str]) -> Callable[..., DictConfig]:
    """Compose a tiny NNCLR run on the tiny npz, writing into ``output_dir``."""

    def make(output_dir: Path, *overrides: str) -> DictConfig:
        return api.compose([*TINY, *tiny_data, *SMALL, *overrides], output_dir=output_dir)

    return make
