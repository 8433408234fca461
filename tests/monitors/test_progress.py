"""A run whose standard output is a file writes plain progress lines instead of a bar."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ..runs import SMALL_NNCLR, TINY, run_cli

LINE = re.compile(r"^epoch (\d)/2  step (\d+)/4  [\d,]+ img/s  ETA \S+  loss [\d.]+(  .+)?$")


def test_one_line_per_epoch_in_a_log_file(
    tmp_path: Path, tiny_data: list[str], mini_npz: Callable[[int, int], list[str]]
) -> None:
    args = [a for a in TINY if not a.startswith(("trainer.max_epochs", "trainer.enable_prog"))]
    run = [*args, *tiny_data, *SMALL_NNCLR, "trainer.max_epochs=2", "knn_report=false"]
    proc = run_cli([*run, f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)  # stdout: a pipe
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if LINE.match(line)]
    assert [LINE.match(line).group(1, 2) for line in lines] == [("1", "2"), ("2", "4")]
    assert "val/knn_acc" in lines[-1] and "nbr/agreement" in lines[-1]
    every = [*run, "trainer.progress_every_n_logs=1", f"hydra.run.dir={tmp_path / 'b'}"]
    steps = [m.group(2) for m in map(LINE.match, run_cli(every, tmp_path).stdout.splitlines()) if m]
    assert steps == ["1", "2", "2", "3", "4", "4"]  # every logging step, and each epoch's end
