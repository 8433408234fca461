"""Evaluations use the data their checkpoint was trained on unless told otherwise, and say so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from nbr_contrast import api


def test_knn_on_a_checkpoint_uses_its_data_and_image_size(
    run_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = api.fit(run_cfg(tmp_path / "run"))  # the 100-image npz at 16 px
    ckpt = str(summary["checkpoint"])
    local = ["task.k=[5]", "task.temperature=[0.1]", "data.num_workers=0"]
    capsys.readouterr()

    result = api.evaluate(ckpt, "knn", local, output_dir=tmp_path / "knn")
    said = capsys.readouterr().out
    assert (result["data"], result["image_size"]) == ("npz", 16)
    assert "data: npz at 16 px, as the checkpoint was trained" in said
    assert result["accuracy"]["0.1"]["5"] == pytest.approx(summary["knn_acc_after@5"])

    bigger = api.evaluate(ckpt, "knn", [*local, "data.image_size=24"], output_dir=tmp_path / "b")
    said = capsys.readouterr().out
    assert (bigger["data"], bigger["image_size"]) == ("npz", 24)
    assert "the command set image_size" in said
