"""The reproduction driver: pair recipes, reuse / resume / restart, parallel runs, time limit."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from omegaconf import OmegaConf

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
    return argparse.Namespace(**{**base, "seeds": [1], "max_train_batches": 0, **kw})


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


# settings of the method's own term, which its baseline does not compute (MoCo v2 has alpha 0:
# no consistency term, tests/methods/test_co2.py)
OWN_TERM = {"co2": {"method.consistency_temperature"}}


@pytest.mark.parametrize("method", ["nnclr", "co2", "snclr", "clim", "cone", "msf"])
def test_smoke_preset_sets_method_and_baseline_alike(
    reproduce: ModuleType, method: str, tmp_path: Path
) -> None:
    common, per_run = reproduce.split_overrides(reproduce.PRESETS["smoke"]["overrides"])
    baseline = reproduce.PAIRS[method]
    cfgs = {
        name: api.compose(
            reproduce.run_overrides(name, args(), common, per_run[name]),
            output_dir=tmp_path / name,
        )
        for name in (method, baseline)
    }
    keys = {o.split("=", 1)[0] for name in (method, baseline) for o in per_run[name]}
    keys -= OWN_TERM.get(method, set())
    absent = object()
    shared = [
        key
        for key in sorted(keys)
        if all(OmegaConf.select(cfg, key, default=absent) is not absent for cfg in cfgs.values())
    ]
    assert shared, "the smoke preset sets nothing both runs of the pair have"
    for key in shared:
        assert OmegaConf.select(cfgs[method], key) == OmegaConf.select(cfgs[baseline], key), key


def test_supervised_runs_get_the_supervised_views_from_their_method(
    reproduce: ModuleType, tmp_path: Path
) -> None:
    args, _ = reproduce.parse_args(["--data", "cifar10_mini", "--epochs", "1"])
    cfg = api.compose(reproduce.run_overrides("supervised", args, [], []), output_dir=tmp_path)
    assert reproduce.data_overrides("cifar10_mini") == ["data=cifar10_mini"]
    assert [v.crop for v in cfg.data.views] == ["pad"]


def test_pair_rows_report_the_delta(reproduce: ModuleType) -> None:
    runs = {
        "co2": {"knn_acc": 50.0, "linear_probe_acc1": 40.0},
        "mocov2": {"knn_acc": 48.5, "linear_probe_acc1": None},
    }
    (row,) = reproduce.pair_rows(runs, ["co2"])
    assert row["baseline"] == "mocov2"
    assert row["metrics"]["knn_acc"]["delta"] == pytest.approx(1.5)
    assert row["metrics"]["linear_probe_acc1"]["delta"] is None


def tiny_study(out: Path, tiny_data: list[str], *flags: str) -> list[str]:
    """Driver arguments for the CoNe pair on 100 images: one epoch of two batches each."""
    paths = [o for o in tiny_data if o.startswith(("data.train_path", "data.test_path"))]
    return [
        "--data=npz",
        "--trainer=cpu",
        "--epochs=1",
        "--batch-size=16",
        "--max-train-batches=2",
        "--methods=cone",
        f"--out={out / 'study'}",
        f"--runs-dir={out / 'runs'}",
        *flags,
        *paths,
        "data.num_workers=0",
        "data.eval_batch_size=50",
        "trainer.limit_val_batches=1",
        "logger.tensorboard=false",
        "method.knn_k=5",
        "cone:method.k=8",
    ]


def test_plan_reuses_finished_resumes_stopped_and_restarts_changed_runs(
    reproduce: ModuleType, tmp_path: Path, tiny_data: list[str]
) -> None:
    overrides = reproduce.run_overrides("cone", args(), [], tiny_data)
    run_dir = tmp_path / "cone"
    assert reproduce.plan("cone", overrides, run_dir) == "fresh"
    assert (run_dir / reproduce.STUDY_CONFIG).is_file()
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_text("stand-in")
    assert reproduce.plan("cone", overrides, run_dir) == "resume"
    stored = json.loads((run_dir / reproduce.STUDY_CONFIG).read_text())
    (run_dir / "summary.json").write_text(json.dumps({"config": {**stored, "resume": True}}))
    assert reproduce.plan("cone", overrides, run_dir) == "reuse"
    assert reproduce.plan("cone", [*overrides, "seed=5"], run_dir) == "fresh"
    assert not (run_dir / "checkpoints").exists()


def test_driver_trains_a_pair_in_parallel_processes_then_reuses_it(
    reproduce: ModuleType, tmp_path: Path, tiny_data: list[str]
) -> None:
    report = reproduce.main(tiny_study(tmp_path, tiny_data, "--jobs=2"))
    (row,) = report["pairs"]
    assert (row["method"], row["baseline"]) == ("cone", "supervised")
    for run in ("cone", "supervised"):
        assert not report["runs"][run]["reused"]
        assert report["runs"][run]["steps"] == 2
        assert report["runs"][run]["top1"] is not None
        assert (tmp_path / "runs" / f"{run}_s42.log").is_file()
    assert (tmp_path / "study.md").read_text().count("| cone | supervised |") == 1
    (tmp_path / "runs").rename(tmp_path / "moved")
    moved = f"--runs-dir={tmp_path / 'moved'}"
    again = reproduce.main([*tiny_study(tmp_path, tiny_data, "--jobs=2"), moved])
    assert all(run["reused"] for run in again["runs"].values())
    assert again["pairs"] == report["pairs"]
    with pytest.raises(SystemExit):  # stopped before seed 7: reports seed 42 alone
        reproduce.main([*tiny_study(tmp_path, tiny_data), moved, "--seeds=42,7", "--time-limit=0"])
    partial = json.loads((tmp_path / "study.json").read_text())
    assert sorted(partial["pending"]) == ["cone@7", "supervised@7"]
    assert partial["summary"]["cone"]["seeds"] == [42] and len(partial["pairs"]) == 1
    assert "| cone | 1 |" in (tmp_path / "study.md").read_text()
    both = reproduce.main([*tiny_study(tmp_path, tiny_data), moved, "--seeds=42,7"])
    assert both["runs"]["cone@42"]["reused"] and not both["runs"]["cone@7"]["reused"]


def test_driver_resumes_a_run_that_lost_its_summary(
    reproduce: ModuleType, tmp_path: Path, tiny_data: list[str]
) -> None:
    reproduce.main(tiny_study(tmp_path, tiny_data))
    (tmp_path / "runs" / "cone_s42" / "summary.json").unlink()
    report = reproduce.main(tiny_study(tmp_path, tiny_data))
    assert report["runs"]["supervised"]["reused"]
    cone = report["runs"]["cone"]
    assert not cone["reused"] and cone["resumed_from"].endswith("last.ckpt")


def test_time_limit_stops_runs_and_exits_with_the_pending_code(
    reproduce: ModuleType, tmp_path: Path, tiny_data: list[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        reproduce.main(tiny_study(tmp_path, tiny_data, "--time-limit=0"))
    assert stop.value.code == reproduce.PENDING_EXIT
    report = json.loads((tmp_path / "study.json").read_text())
    assert sorted(report["pending"]) == ["cone", "supervised"] and not report["pairs"]
