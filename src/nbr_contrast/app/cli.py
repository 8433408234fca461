"""``python -m nbr_contrast``: the Hydra application.

Overrides are checked against the structured configs and the config groups *before* Hydra
composes them (:mod:`nbr_contrast.app.overrides`), so a misspelt key or group option fails at
once with the valid choices and the closest match. Every rank of a distributed run writes
into its job's one folder (:mod:`nbr_contrast.app.rank_launch`).

Exit codes: 0 done; 2 a setting cannot work (one ``Error:`` line on stderr naming the
setting and the fix, no traceback; a run folder holding nothing yet is removed); 1 the
loss became NaN/inf (one ``Error:`` line; a diagnostic checkpoint is saved) or a bug (full
traceback); 128 + signal number when SIGTERM/SIGINT stopped the run: after saving
``last.ckpt`` once training has started, and with nothing saved (a new run's folder
removed) before its first training batch. ``HYDRA_FULL_ERROR=1`` shows the traceback for
every error. A multirun goes on past a failed job: each failure is reported and listed in
``failures.txt`` in the sweep folder, and the sweep exits with the first failed job's code.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from nbr_contrast.app.overrides import (
    OverrideError,
    check_duplicates,
    check_overrides,
    check_words,
)
from nbr_contrast.app.rank_launch import (
    RUN_STAMP_ENV,
    rank_command,
    rank_launch_env,
    shared_run_stamp,
)
from nbr_contrast.app.renames import upgrade_overrides
from nbr_contrast.app.schemas import CONF_DIR, register_configs

# a multirun's failed jobs (their exit codes) and where they are listed in the sweep folder
FAILED_JOBS: list[int] = []
FAILURES = "failures.txt"


def _fail(error: BaseException, code: int) -> NoReturn:
    """Print ``Error: <message>`` and exit (re-raise under ``HYDRA_FULL_ERROR=1``)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"Error: {error}", file=sys.stderr)
    sys.exit(code)


def _record_failure(hydra_cfg: Any, error: BaseException, code: int | None) -> None:
    """Report a failed multirun job and append it to ``<sweep dir>/failures.txt``.

    The sweep goes on with its other jobs; :func:`main` exits non-zero at the end. A bug
    (``code`` ``None``) also prints its traceback, and counts as exit code 1.
    """
    if code is None:
        traceback.print_exc()
    message = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if code is None:
        message = f"{type(error).__name__}: {message}"
    overrides = " ".join(hydra_cfg.overrides.task)
    line = f"job {hydra_cfg.job.num} ({overrides}): {message}"
    print(f"Error: {line}", file=sys.stderr)
    record = Path(hydra_cfg.sweep.dir) / FAILURES
    record.parent.mkdir(parents=True, exist_ok=True)
    with record.open("a") as f:
        f.write(f"{line} [exit code {code or 1}]\n")
    FAILED_JOBS.append(code or 1)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from nbr_contrast.app.reliability import (
        RunInterrupted,
        StoppedBeforeStep,
        is_user_error,
        resume_command,
    )
    from nbr_contrast.app.reliability.run_lock import discard_if_unused
    from nbr_contrast.app.tasks import run_task
    from nbr_contrast.methods.guard import NonFiniteLossError

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    hydra_cfg = HydraConfig.get()
    cfg.output_dir = hydra_cfg.runtime.output_dir
    try:
        with rank_launch_env(cfg.output_dir, list(hydra_cfg.overrides.task)):
            result = run_task(cfg)
    except RunInterrupted as stop:
        print(f"{stop} Resume with:\n  {resume_command(cfg)}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except (StoppedBeforeStep, KeyboardInterrupt) as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        if discard_if_unused(cfg.output_dir, f"{hydra_cfg.job.name}.log"):
            print(
                f"Stopped on {name} before anything was saved; the run folder is removed.",
                file=sys.stderr,
            )
        else:
            print(
                f"Stopped on {name}; nothing more was saved in {cfg.output_dir}.", file=sys.stderr
            )
        sys.exit(128 + signum)
    except Exception as err:
        code = 1 if isinstance(err, NonFiniteLossError) else 2 if is_user_error(err) else None
        if hydra_cfg.mode == RunMode.MULTIRUN and os.environ.get("HYDRA_FULL_ERROR") != "1":
            _record_failure(hydra_cfg, err, code)
            return None
        if code is None:
            raise
        if code == 2:
            discard_if_unused(cfg.output_dir, f"{hydra_cfg.job.name}.log")
        _fail(err, code)
    value = result.get(f"knn_acc_after@{cfg.method.knn_k}")
    return float(value) if isinstance(value, int | float) else None


def main() -> None:
    """Entry point of ``python -m nbr_contrast`` and the ``nbr-contrast`` script."""
    register_configs()
    command = rank_command(sys.argv, os.environ)
    if command is not None:
        sys.argv = command
    stamp = shared_run_stamp(os.environ)
    if stamp is not None:
        os.environ.setdefault(RUN_STAMP_ENV, stamp)
    args, notes = upgrade_overrides(sys.argv[1:])
    sys.argv = [sys.argv[0], *args]
    for note in notes:
        print(note, file=sys.stderr)
    try:
        check_words(sys.argv[1:])
        check_duplicates(sys.argv[1:])
        check_overrides(sys.argv[1:])
    except OverrideError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    FAILED_JOBS.clear()
    try:
        _hydra_main()
    finally:
        from nbr_contrast.app.reliability.run_lock import release_all

        release_all()
    if FAILED_JOBS:
        print(
            f"Error: {len(FAILED_JOBS)} job(s) of the sweep failed; they are listed in "
            f"{FAILURES} in the sweep folder.",
            file=sys.stderr,
        )
        sys.exit(FAILED_JOBS[0])
