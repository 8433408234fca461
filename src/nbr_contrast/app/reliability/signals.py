"""SIGTERM/SIGINT: save ``last.ckpt`` at the next batch boundary, then stop the run."""

from __future__ import annotations

import os
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


class StoppedBeforeStep(Exception):  # noqa: N818 (an outcome, not an error)
    """A signal arrived before the fit's first training batch: there was nothing to save.

    Attributes:
        signum: The signal received.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"Stopped on {name} before the first training step")


class StopOnSignal(Callback):
    """Turn SIGTERM and SIGINT into "save ``last.ckpt``, then stop".

    The handlers are installed when a fit sets up, again when training starts (over the
    SIGTERM handler Lightning installs in between, so ours take precedence), and the ones
    from before are put back when the fit ends or fails. Before the first training batch
    starts (setup, the kNN pass, the sanity check) a signal stops the fit at once with
    :class:`StoppedBeforeStep`: no step was taken, so there is nothing to save. From then on a
    signal only sets a flag; at the end of the current training batch (or epoch) the state
    is saved to ``<checkpoints>/last.ckpt`` and :class:`RunInterrupted` ends the fit. A second
    SIGINT while waiting raises ``KeyboardInterrupt`` at once. Under DDP the flag is shared,
    so every rank stops at the same batch.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.training = False
        self._previous: dict[int, Any] = {}
        self._owner = os.getpid()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._owner:
            return  # a loader worker forked with our handler: the main process stops it
        if not self.training:
            raise StoppedBeforeStep(signum)
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def _install(self) -> None:
        """Install the handlers (only the main thread may), keeping the first ones found."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._owner = os.getpid()
        for signum in SIGNALS:
            self._previous.setdefault(signum, signal.signal(signum, self._handle))

    def _restore(self, trainer: L.Trainer) -> None:
        """Put back the handlers from before the fit, and have Lightning put back the same.

        Lightning restores, after the fit, the handlers it found when it installed its own
        (ours, installed at setup); it is given the ones from before ours instead.
        """
        found = getattr(getattr(trainer, "_signal_connector", None), "_original_handlers", {})
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
            if signum in found:
                found[signum] = handler
        self._previous = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Install the handlers when a fit starts."""
        self.received, self.training = None, False
        if stage == "fit":
            self._install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install the handlers again, over the SIGTERM handler Lightning added."""
        self._install()

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        """From the first batch on, a signal waits for the batch's end to save."""
        self.training = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Put the previous handlers back."""
        self._restore(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Put the previous handlers back when the fit fails or is interrupted."""
        self._restore(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Put the previous handlers back when a fit that never trained ends."""
        self._restore(trainer)

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
