"""A multirun sweep goes on past a failing job, lists it, and exits non-zero."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nbr_contrast.app import cli

from ..runs import last_wins
from .conftest import SMALL, TINY


def test_sweep_runs_every_job_and_lists_the_failed_one(
    tiny_data: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    sweep = tmp_path / "sweep"
    argv = ["-m", *TINY, *tiny_data, *SMALL, "optim.lr=-1,0.4", f"hydra.sweep.dir={sweep}"]
    monkeypatch.setattr(sys, "argv", ["nbr_contrast", *last_wins(argv)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err
    failures = (sweep / cli.FAILURES).read_text().splitlines()
    assert len(failures) == 1
    assert failures[0].startswith("job 0 (")
    assert "optim.lr=-1" in failures[0] and "optim.lr=-1.0 must be positive." in failures[0]
    assert f"Error: {failures[0].rsplit(' [', 1)[0]}" in err.splitlines()
    summary = json.loads((sweep / "1_nnclr" / "summary.json").read_text())
    assert summary["config"]["optim"]["lr"] == 0.4
    assert not (sweep / "0_nnclr" / "summary.json").exists()
