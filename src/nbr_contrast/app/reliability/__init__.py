"""Reliability: atomic checkpoints, exact resume, signal handling and input validation.

* :mod:`~nbr_contrast.app.reliability.checkpoint_io`: checkpoints are written to a temporary
  file and renamed over the target, so a crash mid-write never leaves a truncated
  ``last.ckpt``; the NaN guard's diagnostic checkpoint.
* :mod:`~nbr_contrast.app.reliability.resume`: the RNG states and the loader position travel in
  the checkpoint; ``resume=true`` and ``ckpt=last`` resolve to a checkpoint; ``RESUME.md``.
* :mod:`~nbr_contrast.app.reliability.run_lock`: a run owns its folder (``run.lock``); a second
  run in it refuses.
* :mod:`~nbr_contrast.app.reliability.signals`: SIGTERM/SIGINT save ``last.ckpt`` at the next
  batch boundary and stop the run.
* :mod:`~nbr_contrast.app.reliability.validation`: settings that cannot work fail before any
  work starts, with one line naming the setting and the fix.
"""

from nbr_contrast.app.reliability.checkpoint_io import AtomicCheckpointIO, RunConfigCallback
from nbr_contrast.app.reliability.resume import (
    ResumeStateCallback,
    check_resumable,
    pretrained_checkpoint,
    resolve_checkpoint,
    resume_command,
    write_resume_note,
)
from nbr_contrast.app.reliability.run_lock import RunFolderBusyError, run_folder
from nbr_contrast.app.reliability.signals import RunInterrupted, StopOnSignal, StoppedBeforeStep
from nbr_contrast.app.reliability.validation import (
    ConfigError,
    is_user_error,
    validate_config,
    validate_labels,
    validate_neighbour_counts,
)

__all__ = [
    "AtomicCheckpointIO",
    "ConfigError",
    "ResumeStateCallback",
    "RunConfigCallback",
    "RunFolderBusyError",
    "RunInterrupted",
    "StopOnSignal",
    "StoppedBeforeStep",
    "check_resumable",
    "is_user_error",
    "pretrained_checkpoint",
    "resolve_checkpoint",
    "resume_command",
    "run_folder",
    "validate_config",
    "validate_labels",
    "validate_neighbour_counts",
    "write_resume_note",
]
