"""Tiny runs for the reliability tests on the 100-image npz of ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from nbr_contrast import api

from ..runs import CPU_RUN, PX16, SMALL_NNCLR

SMALL = SMALL_NNCLR
TINY = [*CPU_RUN, *PX16]


@pytest.fixture
def run_cfg(tiny_data: list[str]) -> Callable[..., DictConfig]:
    """Compose a tiny NNCLR run on the tiny npz, writing into ``output_dir``."""

    def make(output_dir: Path, *overrides: str) -> DictConfig:
        return api.compose([*TINY, *tiny_data, *SMALL, *overrides], output_dir=output_dir)

    return make
