"""Shared fixtures: small configs composed exactly as the CLI composes them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from nbr_contrast import api

TINY = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger.tensorboard=false",
    "data.batch_size=16",
    "data.eval_batch_size=64",
    "data.num_workers=0",
    "optim.warmup_epochs=0",
    "plots=false",
]


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a tiny CPU run config with extra overrides, writing into ``tmp_path``."""

    def make(*overrides: str) -> DictConfig:
        return api.compose([*TINY, *overrides], output_dir=tmp_path / "run")

    return make
