"""Atomic checkpoint writes, one-line failures for unreadable checkpoints, NaN diagnostics.

Checkpoints get the permissions of any other file the run writes (``0666`` less the
umask), so colleagues on a shared cluster can read them; a full disk, a file-size limit, a
read-only or unwritable folder is named in one line, however torch wrapped the error.
:class:`RunStateCallback` is the base of the callbacks that add run state to them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from nbr_contrast.app.reliability.validation import ConfigError
from nbr_contrast.app.renames import upgrade_config


class CheckpointWriteError(ConfigError):
    """The operating system refused a checkpoint write (full disk, size limit, permissions)."""


class DiskFullError(CheckpointWriteError):
    """A checkpoint could not be written: the disk (or the quota) is full."""


WRITE_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("No space left on the device", "Free space in {folder}"),
    errno.EDQUOT: ("The disk quota is exceeded", "Free space in your quota for {folder}"),
    errno.EFBIG: (
        "The file is larger than this file system or the process's file-size limit allows",
        "Raise the limit (ulimit -f) or use a file system that takes larger files for {folder}",
    ),
    errno.EACCES: ("Permission denied", "Make {folder} writable for this user"),
    errno.EROFS: ("The file system is read-only", "Put the run on a writable disk"),
}
"""What an operating-system error while writing a checkpoint means, and what to do."""


def os_error(err: BaseException) -> OSError | None:
    """The operating-system error under ``err``, however torch wrapped it.

    torch's zip writer reports a failed write of a real file as a ``RuntimeError``
    (``[enforce fail at inline_container.cc] ...``) whose context is the ``OSError``.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in WRITE_ERRORS:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def write_error(err: BaseException, target: Path) -> CheckpointWriteError | None:
    """One line for an operating-system error while writing ``target``, else ``None``."""
    found = os_error(err)
    if found is None or found.errno is None:
        return None
    what, fix = WRITE_ERRORS[found.errno]
    folder = repr(str(target.parent))
    kind = DiskFullError if found.errno in (errno.ENOSPC, errno.EDQUOT) else CheckpointWriteError
    intact = (
        "the previous checkpoint there is intact"
        if target.exists()
        else "no earlier checkpoint was there"
    )
    return kind(
        f"{what} while writing {str(target)!r} ({errno.errorcode[found.errno]}); {intact}. "
        f"{fix.format(folder=folder)} (or set hydra.run.dir to another folder) and run again "
        "(resume=true continues from the last checkpoint)."
    )


class CheckpointReadError(ConfigError):
    """A checkpoint file is truncated, corrupt or not one written by ``task=fit``."""


class RunStateCallback(Callback):
    """A callback with one state slot per run in the checkpoint, named after its class.

    It keeps the trainer from :meth:`setup`, for its :meth:`state_dict` to read loop state.
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None

    @property
    def state_key(self) -> str:
        """One state slot per run: the class name."""
        return type(self).__name__

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Keep the trainer."""
        self._trainer = trainer


RUN_CONFIG_KEY = "run_config"
"""Checkpoint key of the composed run config (:class:`RunConfigCallback` writes it)."""


class RunConfigCallback(Callback):
    """Keeps the run config in every checkpoint the run writes (under :data:`RUN_CONFIG_KEY`).

    The method's own hyper-parameters are its constructor arguments; evaluations, resume
    checks and the choice of evaluation data read the whole run config from here.

    Args:
        config: The composed run config as plain containers.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Add the run config."""
        checkpoint[RUN_CONFIG_KEY] = self.config


def stored_run_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The run config a checkpoint holds (``None`` when it holds none).

    Checkpoints of this release keep it under :data:`RUN_CONFIG_KEY`; those of releases
    whose methods took the whole run config keep it in ``hyper_parameters["cfg"]``, with the
    settings renamed since under their old names (:mod:`~nbr_contrast.app.renames`).
    """
    config = checkpoint.get(RUN_CONFIG_KEY)
    if config is None:
        config = (checkpoint.get("hyper_parameters") or {}).get("cfg")
    return upgrade_config(dict(config)) if isinstance(config, dict) else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_checkpoint(path: str | Path, setting: str = "ckpt") -> dict[str, Any]:
    """Load a checkpoint written by ``task=fit`` (memory-mapped), or fail with one line.

    Args:
        path: The checkpoint file.
        setting: The config key that named it, for the message.

    Raises:
        CheckpointReadError: If the file is truncated, corrupt or not such a checkpoint.
    """
    try:
        saved = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # torch raises several types for a damaged zip or pickle
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointReadError(
            f"{setting}={str(path)!r} cannot be read, the file is truncated or corrupt "
            f"({reason}); pass another checkpoint (e.g. the run's checkpoints/epochNNN.ckpt)."
        ) from err
    if not isinstance(saved, dict) or stored_run_config(saved) is None:
        raise CheckpointReadError(
            f"{setting}={str(path)!r} is not a checkpoint written by task=fit (it has no run "
            "config); pass a run's checkpoints/last.ckpt."
        )
    return saved


def read_run_config(path: str | Path, setting: str = "ckpt") -> dict[str, Any]:
    """The run config of the checkpoint ``path`` (see :func:`read_checkpoint`)."""
    config = stored_run_config(read_checkpoint(path, setting))
    assert config is not None  # read_checkpoint refuses a checkpoint without one
    return config


def check_kind(config: dict[str, Any], path: str | Path, task: str, setting: str = "ckpt") -> None:
    """Refuse a checkpoint written by another task than ``task`` (a head for a pretraining).

    Raises:
        CheckpointReadError: Naming the checkpoint's task and, for a linear or fine-tuning
            head, the pretraining checkpoint it was made from (as its run recorded it).
    """
    written_by = str((config.get("task") or {}).get("name", "fit"))
    if written_by == task:
        return
    if written_by == "fit":
        raise CheckpointReadError(
            f"{setting}={path} is a pretraining checkpoint (task=fit), not a task={task} one; "
            f"pass the task={task} run's own checkpoints/last.ckpt."
        )
    source = config.get("ckpt")
    origin = f": {source}" if source else " (its run did not record it)"
    raise CheckpointReadError(
        f"{setting}={path} is a task={written_by} checkpoint (a {written_by} head on a "
        f"frozen or fine-tuned backbone), not a pretraining one; pass the pretraining "
        f"checkpoint it was made from{origin}."
    )


def readable(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint :func:`read_checkpoint` can load."""
    try:
        read_checkpoint(path)
    except CheckpointReadError:
        return False
    return True


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
        os.chmod(tmp, 0o666 & ~_umask())  # as open() would create it, not mkstemp's 0600
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as err:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            named = write_error(err, target)
            if named is not None:
                raise named from err
            raise
