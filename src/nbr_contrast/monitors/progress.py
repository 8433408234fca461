"""Progress for log files: plain lines where a progress bar cannot draw.

A run whose output goes to a file (SLURM, ``nohup``, CI) shows nothing of a progress bar
between the model summary and the final table. :class:`PlainProgress` writes one plain line
at every epoch's end, and optionally every ``N × log_every_n_steps`` steps::

    epoch 3/10  step 117/390  1,182 img/s  ETA 4m51s  loss 3.871  val/knn_acc 31.2

The values are those Lightning already holds (``trainer.callback_metrics``); the lines are
written on logging steps and at epoch ends only, so steady steps never wait for the device.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import Callback

from nbr_contrast.utils.batches import per_device_batch_size

SHOWN = (
    "train/loss",
    "val/knn_acc",
    "val/probe_acc1",
    "val/acc1",
    "train/nbr/agreement",
    "train/nbr/self_retrieval",
    "train/nbr/spread",
)
"""The metrics a line shows (those the run has), in this order, without ``train/``."""


def duration(seconds: float) -> str:
    """``1h02m``, ``4m51s`` or ``12s``."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class PlainProgress(Callback):
    """One plain line per epoch (and every ``every_n_logs`` logging intervals) of a fit.

    Args:
        every_n_logs: Also write a line every ``every_n_logs × trainer.log_every_n_steps``
            optimiser steps (0: at epoch ends only).
        stream: Where the lines go (default: standard output).
    """

    def __init__(self, every_n_logs: int = 0, stream: TextIO | None = None) -> None:
        if every_n_logs < 0:
            raise ValueError(f"PlainProgress(every_n_logs={every_n_logs}): must be >= 0.")
        self.every_n_logs = int(every_n_logs)
        self.stream = stream
        self._start = 0.0
        self._last = (0.0, 0)  # (time, step) of the previous line
        self._samples_per_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clocks; the images per step are the global batch."""
        self._start = time.perf_counter()
        self._last = (self._start, trainer.global_step)
        batch = per_device_batch_size(trainer)
        self._samples_per_step = batch * trainer.world_size * trainer.accumulate_grad_batches

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        """A line every ``every_n_logs`` logging intervals (on a logging step)."""
        every = self.every_n_logs * trainer.log_every_n_steps
        step = trainer.global_step
        if every and step and step % every == 0 and step != self._last[1]:
            self.write_line(trainer, epoch_end=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A line at every epoch's end (with the epoch's mean loss)."""
        self.write_line(trainer, epoch_end=True)

    def write_line(self, trainer: L.Trainer, epoch_end: bool) -> None:
        """Write the current epoch, step, speed, ETA and metrics (rank 0 only)."""
        if not trainer.is_global_zero:
            return
        now, step = time.perf_counter(), trainer.global_step
        last_time, last_step = self._last
        speed = (step - last_step) * self._samples_per_step / max(now - last_time, 1e-9)
        total = trainer.estimated_stepping_batches
        left = (now - self._start) / max(step, 1) * (total - step) if math.isfinite(total) else 0.0
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        parts = [
            f"epoch {trainer.current_epoch + 1}/{epochs}",
            f"step {step}/{total if math.isfinite(total) else '?'}",
            f"{speed:,.0f} img/s",
            f"ETA {duration(left)}",
        ]
        metrics = trainer.callback_metrics
        suffix = "_epoch" if epoch_end else "_step"
        for key in SHOWN:
            value = next((metrics[k] for k in (f"{key}{suffix}", key) if k in metrics), None)
            if value is not None and value.numel() == 1:
                parts.append(f"{key.removeprefix('train/')} {float(value):.4g}")
        print("  ".join(parts), file=self.stream or sys.stdout, flush=True)
        self._last = (now, step)
