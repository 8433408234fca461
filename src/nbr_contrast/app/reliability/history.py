"""Resume keeps the metrics history: ``csv/metrics.csv`` and the TensorBoard events.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts; a resumed run
would lose every row from before the interruption. :class:`HistoryCSVLogger` keeps the rows
logged before the resumed step and appends the new ones after them. Rows at or after that
step (logged after the checkpoint was written, before the run died) are dropped, as the
resumed run logs those steps again; TensorBoard gets the same cut with ``purge_step``.
:class:`EpochAveragesCallback` carries the interrupted epoch's running averages.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor

from nbr_contrast.app.reliability.checkpoint_io import RunStateCallback, read_checkpoint


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


class EpochAveragesCallback(RunStateCallback):
    """Carry the interrupted epoch's running averages (``on_epoch`` logs) across a resume.

    Lightning accumulates every ``self.log(..., on_epoch=True)`` value over the epoch and
    logs the average at its end; a run resumed mid-epoch would average only the batches
    after the stop. The accumulators (sum and count for means, the running value for
    sums, maxima and minima) go into the checkpoint and are added back once the first
    resumed batch has been logged, so the epoch's averages match an uninterrupted run.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, dict[str, Tensor]] = {}

    def _results(self) -> dict[str, Any]:
        trainer = self._trainer
        if trainer is None or not trainer.training:
            return {}
        loop = trainer.fit_loop.epoch_loop
        if loop.batch_progress.current.ready >= trainer.num_training_batches:
            return {}  # the epoch's batches are all drawn: a resume starts the next epoch
        return dict(loop._results)

    def state_dict(self) -> dict[str, Any]:
        """The accumulators of the epoch in progress (none at an epoch's end)."""
        saved = {}
        for key, metric in self._results().items():
            if getattr(metric, "is_tensor", False) and metric.meta.on_epoch:
                state = {"value": metric.value.detach().clone()}
                if metric.meta.is_mean_reduction:
                    state["count"] = metric.cumulated_batch_size.detach().clone()
                saved[key] = state
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the accumulators until the first resumed batch has logged."""
        self._pending = dict(state_dict or {})

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Add the saved accumulators to the resumed epoch's (once)."""
        if not self._pending:
            return
        results = trainer.fit_loop.epoch_loop._results
        for key, state in self._pending.items():
            metric = results.get(key)
            if metric is None or not getattr(metric, "is_tensor", False):
                continue
            value = state["value"].to(metric.value.device)
            if metric.meta.is_mean_reduction:
                metric.value = metric.value + value
                count = state["count"].to(metric.cumulated_batch_size.device)
                metric.cumulated_batch_size = metric.cumulated_batch_size + count
            elif metric.meta.is_sum_reduction:
                metric.value = metric.value + value
            else:
                metric.value = metric.meta.reduce_fx(torch.stack([metric.value, value]))
            metric._computed = None
        self._pending = {}
