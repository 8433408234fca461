"""The non-finite loss guard: a device-side record, read only at check points.

Testing ``torch.isfinite(loss)`` on the host every step would make the host wait for the
device at every step. :class:`FiniteGuard` instead keeps, on the loss's device, the global
step and epoch of the first non-finite loss and the loss terms of that step; the record is
updated by a few device ops per step and read back only at check points (logging steps,
every ``trainer.finite_check_every_n_steps`` steps, before any checkpoint is written and at
the end of training).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import Tensor


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term is NaN or infinite."""


@dataclass(frozen=True)
class NonFiniteRecord:
    """The first non-finite loss seen, as read back from the device.

    Attributes:
        step: Its global step.
        epoch: Its epoch.
        terms: The values of the recorded loss terms at that step.
    """

    step: int
    epoch: int
    terms: dict[str, float]


class FiniteGuard:
    """First non-finite loss of a run, recorded on the device.

    Args:
        names: Names of the loss terms recorded with the failing step.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.step: Tensor | None = None
        self.epoch: Tensor | None = None
        self.terms: Tensor | None = None

    def reset(self) -> None:
        """Forget the record (a new fit starts clean)."""
        self.step = self.epoch = self.terms = None

    def update(self, terms: tuple[Tensor, ...], step: int, epoch: int) -> None:
        """Record ``step`` if the sum of ``terms`` is not finite and nothing is recorded yet.

        Args:
            terms: Scalar loss terms, one per name, on one device.
            step: The current global step.
            epoch: The current epoch.
        """
        values = torch.stack([t.detach().float() for t in terms])
        if self.step is None:
            self.step = torch.full((), -1, dtype=torch.long, device=values.device)
            self.epoch = torch.full((), -1, dtype=torch.long, device=values.device)
            self.terms = torch.zeros_like(values)
        first = torch.isfinite(values).all().logical_not() & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.epoch = torch.where(first, epoch, self.epoch)
        self.terms = torch.where(first, values, self.terms)

    def read(self) -> NonFiniteRecord | None:
        """Read the record back (waits for the device): the first bad step, or None."""
        if self.step is None or self.epoch is None or self.terms is None:
            return None
        step = int(self.step)
        if step < 0:
            return None
        values = self.terms.tolist()
        return NonFiniteRecord(step, int(self.epoch), dict(zip(self.names, values, strict=True)))


def last_good_state(trainer: L.Trainer) -> str:
    """Where the last good state is: ``last.ckpt`` when one was saved before the failure."""
    last = checkpoint_folder(trainer) / "last.ckpt"
    if last.is_file():
        return f"{last} still holds the last good state."
    return "no checkpoint was saved before the failure, so there is no good state to resume."


def checkpoint_folder(trainer: L.Trainer) -> Path:
    """Folder of the trainer's ``ModelCheckpoint`` (``<default_root_dir>/checkpoints`` if none)."""
    callback = trainer.checkpoint_callback
    dirpath = getattr(callback, "dirpath", None)
    return Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "checkpoints"


def save_diagnostic_checkpoint(trainer: L.Trainer, stem: str) -> Path:
    """Save the current state as ``<checkpoints>/<stem>.ckpt`` from this rank alone.

    Used when a step fails: only the failing rank may get here, so this must not wait for
    the others (``Trainer.save_checkpoint`` would); under DDP each rank writes its own
    ``<stem>-rank<r>.ckpt``. ``last.ckpt`` is never touched.

    Args:
        trainer: The running trainer.
        stem: File name without suffix, e.g. ``nonfinite-step12``.

    Returns:
        The written file.
    """
    if trainer.world_size > 1:
        stem = f"{stem}-rank{trainer.global_rank}"
    path = checkpoint_folder(trainer) / f"{stem}.ckpt"
    # Lightning has no public rank-local dump; this is what Trainer.save_checkpoint calls.
    checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, path)
    return path
