"""Settings renamed in 0.2 keep working: old names on the command line and in checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig

from nbr_contrast import api
from nbr_contrast.app.renames import upgrade_config, upgrade_overrides

from .runs import run_cli

SMALL_SNCLR = [
    "method=snclr",
    "method.proj_hidden_dim=32",
    "method.pred_hidden_dim=32",
    "method.proj_output_dim=16",
    "method.queue_size=64",
    "method.k=3",
    "method.knn_k=10",
]


def test_old_override_names_are_rewritten_with_a_note() -> None:
    args, notes = upgrade_overrides(
        ["index=torch", "+index.half=true", "method.num_neighbours=0", "method.graph_k=4", "seed=1"]
    )
    assert args == ["search=torch", "+search.half=true", "method.k=0", "method.k=4", "seed=1"]
    assert notes[0] == "index=torch is now search=torch (renamed in nbr_contrast 0.2)."
    assert len(notes) == 4


def test_the_command_line_takes_an_old_name(tmp_path: Path) -> None:
    proc = run_cli(
        ["index=torch", "method=snclr", "method.num_neighbours=2", "--cfg", "job"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "index=torch is now search=torch" in proc.stderr
    assert "method.num_neighbours=2 is now method.k=2" in proc.stderr
    assert "search:\n  backend: torch" in proc.stdout and "  k: 2\n" in proc.stdout


def test_a_checkpoint_of_0_1_still_evaluates(
    tiny_cfg: Callable[..., DictConfig], tiny_data: list[str], tmp_path: Path
) -> None:
    summary = api.fit(tiny_cfg(*tiny_data, *SMALL_SNCLR, "knn_report=false"))
    saved = torch.load(summary["checkpoint"], map_location="cpu", weights_only=False)
    config = saved.pop("run_config")
    config["index"] = config.pop("search")
    config["method"]["num_neighbours"] = config["method"].pop("k")
    saved.pop("nbr_contrast_method")
    saved["hyper_parameters"] = {"cfg": config}  # where 0.1 kept the run config
    old = tmp_path / "old.ckpt"
    torch.save(saved, old)
    assert upgrade_config(config)["method"]["k"] == 3 and "search" in upgrade_config(config)
    method = api.load(old)
    assert method.k == 3
    result = api.evaluate(old, "knn", ["task.k=[5]", "data.num_workers=0"], tmp_path / "knn")
    assert 0.0 <= result["accuracy"]["0.07"]["5"] <= 100.0
