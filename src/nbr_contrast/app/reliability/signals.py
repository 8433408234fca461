"""SIGTERM/SIGINT: save ``last.ckpt`` at the next batch boundary, then stop the run."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from nbr_contrast.methods.guard import checkpoint_folder

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(Exception):  # noqa: N818 (an outcome, not an error)
    """The run stopped on a signal after saving ``last.ckpt``.

    Attributes:
        signum: The signal received.
        checkpoint: The checkpoint written before stopping.
        step: The optimiser step the checkpoint holds.
    """

    def __init__(self, signum: int, checkpoint: Path, step: int) -> None:
        self.signum = signum
        self.checkpoint = checkpoint
        self.step = step
        name = signal.Signals(signum).name
        super().__init__(f"Stopped on {name} at global step {step}; saved {checkpoint}.")


class StopOnSignal(Callback):
    """Turn SIGTERM and SIGINT into "save ``last.ckpt``, then stop".

    The handlers are installed when training starts (after Lightning installed its own, so
    ours take precedence) and the previous ones are put back when training ends or fails.
    A signal only sets a flag; at the end of the current training batch (or epoch) the
    state is saved to ``<checkpoints>/last.ckpt`` and :class:`RunInterrupted` ends the fit.
    A second SIGINT while waiting raises ``KeyboardInterrupt`` at once. Under DDP the flag
    is shared, so every rank stops at the same batch.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install the handlers (only the main thread may)."""
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Put the previous handlers back."""
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Put the previous handlers back when the fit fails or is interrupted."""
        self._restore()

    def _stop_if_signalled(self, trainer: L.Trainer, batch_end: bool = False) -> None:
        received = self.received is not None
        if trainer.world_size > 1:
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        if batch_end:
            # the loop logs a batch's step metrics after this hook; log this one's now, or
            # the history would miss the step the checkpoint holds
            trainer._logger_connector.update_train_step_metrics()
        path = checkpoint_folder(trainer) / "last.ckpt"
        trainer.save_checkpoint(path)
        raise RunInterrupted(self.received or signal.SIGTERM, path, int(trainer.global_step))

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Log this batch's metrics, save and stop if a signal arrived during this batch."""
        self._stop_if_signalled(trainer, batch_end=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save and stop if a signal arrived during validation."""
        self._stop_if_signalled(trainer)
