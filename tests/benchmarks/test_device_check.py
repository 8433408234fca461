"""The device check runs end to end on the CPU (``--device cpu --quick``), so it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_check.py"
PARTS = ("bare", "throughput", "views", "search", "audit", "lightly", "total")


@pytest.fixture(scope="module")
def device_check() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))  # its sibling modules, as `python benchmarks/...`
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_cpu_check_writes_every_part(device_check: ModuleType, tmp_path: Path) -> None:
    device_check.main([str(tmp_path / "check"), "--device", "cpu", "--quick"])
    data = json.loads((tmp_path / "check" / "device_check.json").read_text())
    assert tuple(data["parts"]) == PARTS
    modes = data["parts"]["throughput"]
    for experiment in ("nnclr_cifar10", "co2_cifar10"):
        for mode in ("ceiling", "gpu eager", "cpu pipeline"):
            assert modes[f"{experiment} {mode}"]["images_per_s"] > 0
        assert "skipped" in modes[f"{experiment} gpu compiled"]
    searched = data["parts"]["search"]
    assert any(k.startswith("two-stage") for k in searched)
    assert any(k.startswith("torch (running merge) bf16") for k in searched)
    audit = data["parts"]["audit"]
    assert audit["host_reads_per_step"]["total"] == 0
    assert audit["ops_per_step"]["backbone forward"] > 0
    table = (tmp_path / "check" / "device_check.md").read_text()
    assert "| audit | host reads per step | 0.0 |" in table


def test_two_stage_top_k_matches_the_single_top_k(device_check: ModuleType) -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(5, 8, generator=gen), dim=1)
    keys = torch.nn.functional.normalize(torch.randn(103, 8, generator=gen), dim=1)
    sims, ids = device_check.two_stage_topk(queries, keys, 4, chunk=10)
    scores = (queries.bfloat16() @ keys.bfloat16().T).float()
    assert torch.equal(sims, scores.topk(4, dim=1).values)
    assert torch.equal(scores.gather(1, ids), sims)  # ties may come in either order
