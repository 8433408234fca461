"""Tiny runs for the reliability tests: a 100-image npz cut from the built-in data."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
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


@pytest.fixture
def run_cfg(tiny_data: list[str]) -> Callable[..., DictConfig]:
    """Compose a tiny NNCLR run on the tiny npz, writing into ``output_dir``."""

    def make(output_dir: Path, *overrides: str) -> DictConfig:
        return api.compose([*TINY, *tiny_data, *SMALL, *overrides], output_dir=output_dir)

    return make
