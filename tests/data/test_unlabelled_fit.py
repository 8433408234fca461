"""End to end: NNCLR pretrains on unlabelled folders, monitored or not; CoNe refuses them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from nbr_contrast import api
from nbr_contrast.app.reliability import ConfigError

from ..runs import PX16, SMALL_NNCLR

UNLABELLED = [*PX16, *SMALL_NNCLR, "data=imagefolder", "data.batch_size=8", "data.num_classes=3"]


def test_nested_unlabelled_folder_trains_with_monitoring_off(
    tiny_cfg: Callable[..., DictConfig],
    unlabelled_tree: Callable[[bool], Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = tiny_cfg(*UNLABELLED, f"data.root={unlabelled_tree(True)}", "plots=true")
    summary = api.fit(cfg)
    assert "the probe, kNN monitor, neighbour agreement and kNN report are off" in caplog.text
    assert summary["steps"] == 1
    assert summary["knn_acc_before@5"] is None and summary["knn_acc_after@5"] is None
    assert summary["online_knn_acc"] is None and summary["linear_probe_acc1"] is None
    written = json.loads((Path(cfg.output_dir) / "summary.json").read_text())
    assert written["knn_acc_after@5"] is None
    assert {Path(p).name for p in summary["plots"]} >= {"neighbours.png", "embedding_map.png"}
    metrics = (Path(cfg.output_dir) / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in metrics
    assert not any(k in metrics for k in ("nbr/agreement", "probe", "val/"))


def test_a_knn_k_above_the_image_count_is_no_error_when_the_knn_monitor_is_off(
    tiny_cfg: Callable[..., DictConfig], unlabelled_tree: Callable[[bool], Path]
) -> None:
    cfg = tiny_cfg(*UNLABELLED, f"data.root={unlabelled_tree(True)}", "method.knn_k=200")
    summary = api.fit(cfg)
    assert summary["steps"] == 1 and summary["knn_acc_after@200"] is None


def test_flat_unlabelled_folder_with_a_labelled_eval_set(
    tiny_cfg: Callable[..., DictConfig],
    unlabelled_tree: Callable[[bool], Path],
    image_tree: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = tiny_cfg(
        *UNLABELLED,
        f"data.root={unlabelled_tree(False)}",
        "data.labels=false",
        f"data.eval_root={image_tree}",
    )
    summary = api.fit(cfg)
    assert "the online probe and the neighbour agreement are off" in caplog.text
    assert summary["linear_probe_acc1"] is None
    for key in ("knn_acc_before@5", "knn_acc_after@5", "online_knn_acc"):
        assert 0.0 <= summary[key] <= 100.0


@pytest.mark.parametrize("method", ["cone", "supervised"])
def test_supervised_methods_refuse_unlabelled_data(
    tiny_cfg: Callable[..., DictConfig], unlabelled_tree: Callable[[bool], Path], method: str
) -> None:
    cfg = tiny_cfg(*PX16, "data=imagefolder", f"data.root={unlabelled_tree(False)}")
    cfg.method = api.compose([f"method={method}"]).method
    with pytest.raises(ConfigError, match=rf"method={method} trains on labels"):
        api.fit(cfg)
