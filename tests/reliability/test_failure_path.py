"""One failure path: a setting that fails in setup, in the first batch or at the first step
ends like one that fails while composing: one ``Error:`` line, exit code 2, no run folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest

from nbr_contrast.app.reliability import ConfigError
from nbr_contrast.data.datamodule import ViewsDataModule
from nbr_contrast.data.image_source import DataSourceError
from nbr_contrast.methods.base import BaseMethod

from .conftest import SMALL, TINY, error_lines, with_callback

MESSAGE = "data.train_path: image 3 cannot be decoded; fix or remove it"


class FailInSetup(L.Callback):
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        raise ConfigError(MESSAGE)


class BrokenLoader:
    """A loader whose first batch cannot be read."""

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Any:
        raise DataSourceError(MESSAGE)


def _fail_at(stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if stage == "setup":
        with_callback(monkeypatch, FailInSetup())
    elif stage == "first batch":
        monkeypatch.setattr(ViewsDataModule, "train_dataloader", lambda self: BrokenLoader())
    else:

        def step(self: BaseMethod, batch: Any, batch_idx: int) -> Any:
            raise ConfigError(MESSAGE)

        monkeypatch.setattr(BaseMethod, "training_step", step)


@pytest.mark.parametrize("stage", ["setup", "first batch", "first step"])
def test_an_error_after_the_trainer_is_built_ends_in_one_line_and_no_folder(
    stage: str,
    tiny_data: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    main_cli: Callable[[list[str]], tuple[int, str]],
) -> None:
    _fail_at(stage, monkeypatch)
    argv = [*TINY, *tiny_data, *SMALL, "knn_report=false", f"hydra.run.dir={tmp_path / 'run'}"]
    code, err = main_cli(argv)
    assert code == 2, err
    assert "Traceback" not in err
    assert error_lines(err) == [f"Error: {MESSAGE}"]
    assert not (tmp_path / "run").exists()
