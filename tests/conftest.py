"""Shared fixtures: small configs composed exactly as the CLI composes them."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from nbr_contrast import api

from .runs import TINY


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
def mini_npz(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, int], list[str]]:
    """Make overrides selecting every ``train_step``-th / ``test_step``-th built-in image."""

    def make(train_step: int, test_step: int) -> list[str]:
        folder = tmp_path_factory.mktemp("mini_npz")
        train = _cut("train", train_step, folder / "train.npz")
        test = _cut("test", test_step, folder / "test.npz")
        return ["data=npz", f"data.train_path={train}", f"data.test_path={test}"]

    return make


@pytest.fixture(scope="session")
def tiny_data(mini_npz: Callable[[int, int], list[str]]) -> list[str]:
    """Overrides selecting a 100-image train / 50-image test npz (10 and 5 per class)."""
    return mini_npz(50, 20)
