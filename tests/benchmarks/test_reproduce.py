"""The reproduction driver's run recipes: a pair differs only in its neighbour part."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from nbr_contrast import api

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce.py"


@pytest.fixture(scope="module")
def reproduce() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module  # its dataclasses look their module up there
    sys.path.insert(0, str(SCRIPT.parent))  # for its sibling module, as `python benchmarks/...`
    spec.loader.exec_module(module)
    return module


def args(**kw: object) -> argparse.Namespace:
    base = {"data": "cifar10_mini", "trainer": "cpu", "epochs": 3, "batch_size": 64}
    return argparse.Namespace(**{**base, "seed": 1, "max_train_batches": 0, **kw})


def test_per_run_overrides_go_to_the_named_runs_only(reproduce: ModuleType) -> None:
    common, per_run = reproduce.split_overrides(["seed=3", "co2,mocov2:method.queue_size=512"])
    assert common == ["seed=3"]
    assert per_run["co2"] == per_run["mocov2"] == ["method.queue_size=512"]
    assert per_run["nnclr"] == []
    with pytest.raises(SystemExit, match="Unknown run"):
        reproduce.split_overrides(["co3:method.alpha=1"])


@pytest.mark.parametrize("method", ["nnclr", "co2", "snclr", "clim", "cone"])
def test_method_and_baseline_share_every_setting_but_the_method(
    reproduce: ModuleType, method: str, tmp_path: Path
) -> None:
    baseline = reproduce.PAIRS[method]
    cfgs = {}
    for name in (method, baseline):
        overrides = reproduce.run_overrides(name, args(), [], [])
        cfgs[name] = api.compose(overrides, output_dir=tmp_path / name)
    a, b = cfgs[method], cfgs[baseline]
    for group in ("backbone", "optim"):
        assert a[group] == b[group], group
    main = len(b.data.views)  # CLIM adds smaller multi-resolution query views, by design
    assert a.data.views[:main] == b.data.views
    assert all(v.size < a.data.image_size for v in a.data.views[main:])
    assert {k: v for k, v in a.data.items() if k != "views"} == {
        k: v for k, v in b.data.items() if k != "views"
    }
    assert a.trainer.max_epochs == b.trainer.max_epochs == 3
    assert a.data.batch_size == 64 and a.seed == b.seed == 1
    assert a.method.knn_k == b.method.knn_k == reproduce.KNN_K


def test_supervised_runs_use_the_supervised_data_config(reproduce: ModuleType) -> None:
    assert reproduce.data_overrides("cifar10_mini", supervised=True) == ["data=cifar10_mini_sup"]
    assert reproduce.data_overrides("cifar10_mini", supervised=False) == ["data=cifar10_mini"]


def test_pair_rows_report_the_delta(reproduce: ModuleType) -> None:
    runs = {
        "co2": {"knn_acc": 50.0, "linear_probe_acc1": 40.0},
        "mocov2": {"knn_acc": 48.5, "linear_probe_acc1": None},
    }
    (row,) = reproduce.pair_rows(runs, ["co2"])
    assert row["baseline"] == "mocov2"
    assert row["metrics"]["knn_acc"]["delta"] == pytest.approx(1.5)
    assert row["metrics"]["linear_probe_acc1"]["delta"] is None
