"""Shared fixtures: small configs composed exactly as the CLI composes them."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
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


def _cut(split: str, step: int, out: Path) -> Path:
    """Every ``step``-th image of the packaged split (class-balanced: labels are sorted)."""
    asset = resources.files("nbr_contrast.data").joinpath("assets", f"cifar10_mini_{split}.npz")
    with resources.as_file(asset) as path, np.load(path) as a:
        jpeg, offsets, labels, classes = a["jpeg"], a["offsets"], a["labels"], a["classes"]
    keep = np.arange(0, len(labels), step)
    parts = [jpeg[offsets[i] : offsets[i + 1]] for i in keep]
    new_offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    np.savez(
        out, jpeg=np.concatenate(parts), offsets=new_offsets, labels=labels[keep], classes=classes
    )
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides selecting a 100-image train / 50-image test npz (10 and 5 per class)."""
    folder = tmp_path_factory.mktemp("tiny_data")
    train = _cut("train", 50, folder / "train.npz")
    test = _cut("test", 20, folder / "test.npz")
    return ["data=npz", f"data.train_path={train}", f"data.test_path={test}"]
