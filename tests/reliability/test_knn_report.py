"""``knn_report=false`` skips the feature passes before and after a fit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from nbr_contrast import api, tasks


def test_knn_report_off_runs_no_feature_pass(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pass(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a feature pass ran")

    monkeypatch.setattr(tasks, "split_features", no_pass)
    summary = api.fit(run_cfg(tmp_path / "run", "knn_report=false", "plots=false"))
    assert summary["knn_acc_before@5"] is None and summary["knn_acc_after@5"] is None
    assert summary["steps"] > 0
