"""Which training steps may read device values back to the host.

A steady-state training step never waits for the device. Reads (logged metrics, the
non-finite check, search timing) happen only on *logging steps*, the steps on which
Lightning writes ``on_step`` metrics to the loggers (every ``trainer.log_every_n_steps``).
"""

from __future__ import annotations

import lightning as L


def is_logging_step(trainer: L.Trainer | None) -> bool:
    """Whether the current training step is one Lightning logs (from batch start to its end).

    Without a trainer (a method called directly), every step counts as a logging step.
    """
    if trainer is None:
        return True
    return bool(trainer._logger_connector.should_update_logs)
