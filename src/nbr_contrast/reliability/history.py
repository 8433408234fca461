"""Resume keeps the metrics history: ``csv/metrics.csv`` and the TensorBoard events.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts; a resumed run
would lose every row from before the interruption. :class:`HistoryCSVLogger` keeps the rows
logged before the resumed step and appends the new ones after them. Rows at or after that
step (logged after the checkpoint was written, before the run died) are dropped, as the
resumed run logs those steps again; TensorBoard gets the same cut with ``purge_step``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger

from nbr_contrast.reliability.checkpoint_io import read_checkpoint


def resumed_step(ckpt: str | Path) -> int:
    """The logging step a run resumed from ``ckpt`` logs first.

    Lightning's count of stepped batches, plus one when the checkpoint was written at the end
    of a training batch (as Lightning counts that batch when it restarts there).
    """
    saved = read_checkpoint(ckpt)
    loop = saved.get("loops", {}).get("fit_loop", {})
    step = int(loop.get("epoch_loop.state_dict", {}).get("_batches_that_stepped", 0))
    total = loop.get("epoch_loop.batch_progress", {}).get("total", {})
    started, processed = total.get("started"), total.get("processed")
    on_batch_end = total.get("ready") == started == processed and total.get("completed") == (
        processed - 1 if isinstance(processed, int) else None
    )
    return step + int(on_batch_end)


def _kept_rows(path: Path, before: int) -> tuple[list[str], list[dict[str, Any]]]:
    if not path.is_file():
        return [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = [row for row in reader if row.get("step") and int(float(row["step"])) < before]
    return header, rows


class HistoryCSVLogger(CSVLogger):
    """``CSVLogger`` that continues an existing ``metrics.csv`` instead of deleting it.

    Args:
        *args: As for ``CSVLogger``.
        keep_before: Keep the existing rows whose ``step`` is below this; ``None`` starts a
            fresh file (a new run).
        **kwargs: As for ``CSVLogger``.
    """

    def __init__(self, *args: Any, keep_before: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_before = keep_before

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The writer; on first use the kept rows are written back ahead of the new ones."""
        if self._experiment is not None or self._keep_before is None:
            return super().experiment
        path = Path(self.log_dir) / "metrics.csv"
        header, rows = _kept_rows(path, self._keep_before)
        writer = super().experiment
        if header:
            with path.open("w", newline="") as f:
                out = csv.DictWriter(f, fieldnames=header)
                out.writeheader()
                out.writerows(rows)
            writer.metrics_keys = header
        return writer
