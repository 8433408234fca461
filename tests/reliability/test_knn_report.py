"""A fit's kNN report: ``knn_report=false`` skips both passes, ``knn_before=false`` the first,
and a resumed fit keeps the "before" accuracy of the run it continues."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from nbr_contrast.app import api, tasks
from nbr_contrast.app.evaluation import knn_run


@pytest.fixture
def knn_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per kNN pass (``knn_shards`` call) from here on."""
    passes: list[int] = []
    real = knn_run.knn_shards

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(knn_run, "knn_shards", counted)
    return passes


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
    run_cfg: Callable[..., DictConfig], tmp_path: Path, knn_passes: list[int]
) -> None:
    summary = api.fit(run_cfg(tmp_path / "run", "knn_before=false", "plots=false"))
    assert summary["knn_acc_before@5"] is None
    assert 0.0 <= summary["knn_acc_after@5"] <= 100.0
    assert len(knn_passes) == 1


def test_resumed_fit_reports_the_before_accuracy_of_the_run_it_continues(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, knn_passes: list[int]
) -> None:
    run = tmp_path / "run"
    first = api.fit(run_cfg(run, "trainer.max_epochs=1", "plots=false"))
    assert first["knn_acc_before@5"] is not None
    knn_passes.clear()  # count the resumed fit's passes only
    resumed = api.fit(run_cfg(run, "trainer.max_epochs=2", "resume=true", "plots=false"))
    assert resumed["resumed_from"] is not None and resumed["epochs"] == 2
    assert resumed["knn_acc_before@5"] == first["knn_acc_before@5"]
    assert len(knn_passes) == 1
