"""Atomic checkpoint writes and the NaN guard's diagnostic checkpoint."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that never leaves a partly written checkpoint behind.

    The checkpoint is serialised into a temporary file in the target's folder, flushed to
    disk, and renamed over the target with :func:`os.replace` (atomic on POSIX and Windows).
    A crash or an exception while writing leaves the previous file untouched and removes
    the temporary one. Remote (``scheme://``) paths fall back to Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically.

        Args:
            checkpoint: The checkpoint dict.
            path: Target file.
            storage_options: Not supported (as in ``TorchCheckpointIO``).

        Raises:
            TypeError: If ``storage_options`` is given.
        """
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint takes no storage_options, got "
                f"{storage_options!r}."
            )
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


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
