"""``knn_report=false`` skips the feature passes of a fit; ``knn_before=false`` only the first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from nbr_contrast import api, tasks
from nbr_contrast.eval import knn_run


def test_knn_report_off_runs_no_feature_pass(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pass(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a feature pass ran")

    monkeypatch.setattr(tasks, "split_features", no_pass)
    monkeypatch.setattr(knn_run, "knn_shards", no_pass)
    summary = api.fit(run_cfg(tmp_path / "run", "knn_report=false", "plots=false"))
    assert summary["knn_acc_before@5"] is None and summary["knn_acc_after@5"] is None
    assert summary["steps"] > 0


def test_knn_before_off_runs_only_the_after_pass(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[int] = []
    real = knn_run.knn_shards

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(knn_run, "knn_shards", counted)
    summary = api.fit(run_cfg(tmp_path / "run", "knn_before=false", "plots=false"))
    assert summary["knn_acc_before@5"] is None
    assert 0.0 <= summary["knn_acc_after@5"] <= 100.0
    assert len(passes) == 1
