"""The neighbour study's summaries: per-epoch series from metrics.csv, the results tables."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "neighbour_study.py"


@pytest.fixture(scope="module")
def study() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))  # its sibling reproduce.py, as `python benchmarks/...`
    spec = importlib.util.spec_from_file_location("neighbour_study", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_series_reads_only_the_rows_that_logged_the_key(study: ModuleType, tmp_path: Path) -> None:
    csv = tmp_path / "csv" / "metrics.csv"
    csv.parent.mkdir()
    csv.write_text(
        "epoch,step,train/nbr/self_retrieval_epoch,train/l_con_step\n"
        "0,4,,0.5\n0,9,0.25,\n1,14,,0.01\n1,19,0.75,\n"
    )
    rows = study.metric_rows(tmp_path)
    assert study.series(rows, "train/nbr/self_retrieval_epoch", "epoch") == [(0, 0.25), (1, 0.75)]
    assert study.series(rows, "train/l_con_step", "step") == [(4, 0.5), (14, 0.01)]


def test_the_tables_show_every_run(study: ModuleType) -> None:
    retrieval = {
        "study": "self_retrieval",
        "runs": [
            {
                "queue_size": q,
                "exclude_self": x,
                "self_retrieval_by_epoch": {"2": 0.5 if q > 5000 and not x else 0.0},
                "knn_acc_before": 28.6,
                "knn_acc_after": 34.0,
                "probe_acc1": 35.0,
            }
            for q in (4096, 8192)
            for x in (False, True)
        ],
    }
    table = study.markdown(retrieval).splitlines()
    assert table[0].startswith("| support set | exclude_self | epoch 2 |") and len(table) == 6
    assert table[4] == "| 8,192 | false | 50.0% | 28.6 → 34.0 | 35.0 |"
    collapse = {
        "study": "collapse",
        "runs": [
            {
                "consistency_temperature": 0.05,
                "warning_step": 23,
                "l_con_below_tenth_at_step": 20,
                "spread_min": 0.05,
                "spread_last": 0.06,
            },
            {
                "consistency_temperature": 0.1,
                "warning_step": None,
                "l_con_below_tenth_at_step": None,
                "spread_min": 0.8,
                "spread_last": 0.9,
            },
        ],
    }
    rows = study.markdown(collapse).splitlines()
    assert rows[2] == "| 0.05 | 23 | 20 | 0.050 | 0.060 |"
    assert rows[3] == "| 0.1 | none | never | 0.800 | 0.900 |"
