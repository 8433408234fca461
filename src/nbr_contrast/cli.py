"""``python -m nbr_contrast``: the Hydra application.

Overrides are checked against the structured configs and the config groups *before* Hydra
composes them, so a misspelt key or group option fails at once with the valid choices and
the closest match.

Exit codes: 0 done; 2 a setting cannot work (one ``Error:`` line on stderr naming the
setting and the fix, no traceback; a run folder holding nothing yet is removed); 1 the
loss became NaN/inf (one ``Error:`` line; a diagnostic checkpoint is saved) or a bug (full
traceback); 128 + signal number when SIGTERM/SIGINT stopped the run after saving
``last.ckpt``. ``HYDRA_FULL_ERROR=1`` shows the traceback for every error. A multirun goes
on past a failed job: each failure is reported and listed in ``failures.txt`` in the sweep
folder, and the sweep exits with the first failed job's code.

Distributed runs: every rank of one run (or of one multirun job) writes into the same
folder. Lightning's ``ddp`` launcher re-runs the command line for each extra local rank;
the job that starts them records its folder and overrides in the environment
(:func:`rank_launch_env`), so a started rank runs exactly that job there
(:func:`rank_command`) instead of the whole sweep with a folder of its own. Ranks started
by ``srun`` or ``torchrun`` name the folder after the SLURM step or the rendezvous id
(:func:`shared_run_stamp`) instead of the launch time, which each process would read from
its own clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import nbr_contrast.config as c
from nbr_contrast.config import RunConfig, register_configs

CONF_DIR = Path(__file__).resolve().parent / "conf"
GROUP_DEFAULTS = {"method": "nnclr"}
JOB_DIR_ENV = "NBR_CONTRAST_JOB_DIR"
JOB_OVERRIDES_ENV = "NBR_CONTRAST_JOB_OVERRIDES"
RUN_STAMP_ENV = "NBR_CONTRAST_RUN_STAMP"
# what Lightning's launchers write into the launching process's environment
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra flags that take their value as the next argument
VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# a multirun's failed jobs (their exit codes) and where they are listed in the sweep folder
FAILED_JOBS: list[int] = []
FAILURES = "failures.txt"


class OverrideError(ValueError):
    """An override names a key that no config schema has."""


def _schema_fields(schema: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _schemas(methods: Sequence[str]) -> dict[str, list[type]]:
    from nbr_contrast.methods import METHOD_CONFIGS

    schemas: dict[str, list[type]] = {
        "backbone": [c.BackboneConfig],
        "data": [c.DataConfig],
        "trainer": [c.TrainerConfig],
        "optim": [c.OptimConfig],
        "index": [c.IndexConfig],
        "logger": [c.LoggerConfig],
        "task": [c.TaskConfig],
    }
    method_schemas = [METHOD_CONFIGS[m] for m in methods if m in METHOD_CONFIGS]
    if method_schemas:
        schemas["method"] = method_schemas
    return schemas


def _experiment_choices(experiment: str, group: str) -> list[str]:
    """Options of ``group`` that ``conf/experiment/<experiment>.yaml`` selects (may be none)."""
    path = CONF_DIR / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        return []
    defaults = OmegaConf.load(path).get("defaults") or []
    return [
        str(entry[key])
        for entry in defaults
        if isinstance(entry, Mapping)
        for key in entry
        if str(key).removeprefix("override ").strip("/ ") == group
    ]


def _selected_methods(overrides: Sequence[str]) -> list[str]:
    """Methods a command selects: ``method=`` values, else its experiments', else the default."""
    named: list[str] = []
    from_experiments: list[str] = []
    for a in overrides:
        key, value = a.split("=", 1)
        if key == "method":
            named += value.split(",")
        elif key == "experiment":
            for experiment in value.split(","):
                from_experiments += _experiment_choices(experiment, "method")
    return named or from_experiments or [GROUP_DEFAULTS["method"]]


def check_overrides(args: Sequence[str]) -> None:
    """Fail fast on ``group.key=value`` overrides whose key no schema has.

    Args:
        args: Command-line arguments (Hydra's own flags and ``+``/``~`` overrides pass).

    Raises:
        OverrideError: With the valid keys (or the group's options) and the closest match.
    """
    overrides = [a for a in args if "=" in a and not a.startswith(("-", "+", "~", "hydra"))]
    schemas = _schemas(_selected_methods(overrides))
    top = {f.name for f in dataclasses.fields(RunConfig)} | {"experiment", "views"}
    for a in overrides:
        key, value = a.split("=", 1)
        parts = key.split(".")
        if len(parts) == 1 and (CONF_DIR / key).is_dir():
            _check_group_option(key, value)
        if parts[0] not in top:
            raise OverrideError(_unknown(key, parts[0], sorted(top), "the run config"))
        if len(parts) < 2 or parts[0] not in schemas:
            continue
        fields = {
            k
            for schema in schemas[parts[0]]
            for k in _schema_fields(schema)
            if not k.startswith("_")
        }
        if parts[1] not in fields:
            raise OverrideError(_unknown(key, parts[1], sorted(fields), f"'{parts[0]}'"))


def _check_group_option(group: str, value: str) -> None:
    """Fail on ``group=option`` when ``conf/<group>/<option>.yaml`` does not exist."""
    if any(ch in value for ch in "()[]{}$") or value == "null":
        return  # sweep functions and interpolations are Hydra's to resolve
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    for option in value.split(","):
        if option not in options:
            close = difflib.get_close_matches(option, options, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise OverrideError(
                f"{group}={option} is not an option of '{group}'.{hint} "
                f"Available: {', '.join(options)}."
            )


def _unknown(key: str, name: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Unknown key '{key}'.{hint} Valid keys in {where}: {', '.join(valid)}."


def _fail(error: BaseException, code: int) -> NoReturn:
    """Print ``Error: <message>`` and exit (re-raise under ``HYDRA_FULL_ERROR=1``)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"Error: {error}", file=sys.stderr)
    sys.exit(code)


def hydra_quote(value: str) -> str:
    r"""``value`` as a quoted string of Hydra's override grammar (spaces, non-ASCII, quotes).

    Inside single quotes Hydra reads ``\'`` as a quote, and a backslash as an escape only
    where backslashes run up to a quote or the end; those runs are doubled.
    """
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


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


def rank_command(argv: Sequence[str], env: Mapping[str, str]) -> list[str] | None:
    """The command line of a rank that Lightning's ``ddp`` launcher started for a job.

    Lightning starts local ranks 1..N-1 by re-running ``sys.argv`` with
    ``hydra.run.dir=<the configured run.dir>``. Under ``-m`` that would run the whole sweep
    in every rank, each with a sweep folder from its own clock. The launching job puts its
    folder and its own overrides in the environment (:func:`rank_launch_env`); from those
    this returns the single-run command of exactly that job, in that folder, keeping
    Hydra's config-location flags and dropping ``-m``.

    Args:
        argv: ``sys.argv`` of this process.
        env: Its environment.

    Returns:
        The replacement ``sys.argv``, or ``None`` for any process that is not such a rank
        (rank 0, ranks started by ``srun``/``torchrun``, plain runs).
    """
    job_dir, overrides = env.get(JOB_DIR_ENV), env.get(JOB_OVERRIDES_ENV)
    local_rank = env.get("LOCAL_RANK", "0")
    if job_dir is None or overrides is None or local_rank == "0":
        return None
    flags: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-m", "--multirun") or not arg.startswith("-"):
            continue
        flags.append(arg)
        if arg in VALUE_FLAGS:
            flags.append(next(args, ""))
    return [
        argv[0],
        *flags,
        *json.loads(overrides),
        f"hydra.run.dir={hydra_quote(job_dir)}",
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]


@contextlib.contextmanager
def rank_launch_env(
    job_dir: str, overrides: Sequence[str], env: MutableMapping[str, str] | None = None
) -> Iterator[None]:
    """Let the ranks Lightning starts during this job join it; clean up after the job.

    Inside the block the environment names this job's folder and overrides (read by
    :func:`rank_command` in the started ranks). Afterwards the launch variables Lightning
    wrote (``LOCAL_RANK``, ``MASTER_PORT``, ...) are restored and, if this process started
    ranks, its process group is destroyed, so the next job of a multirun starts a fresh
    group of ranks on a fresh port instead of reusing the finished job's.

    Args:
        job_dir: This job's output folder.
        overrides: This job's overrides (``hydra.overrides.task``).
        env: The environment to edit (``os.environ`` by default).
    """
    env = os.environ if env is None else env
    keys = (*LAUNCH_ENV, JOB_DIR_ENV, JOB_OVERRIDES_ENV)
    saved = {key: env.get(key) for key in keys}
    env[JOB_DIR_ENV] = job_dir
    env[JOB_OVERRIDES_ENV] = json.dumps(list(overrides))
    try:
        yield
    finally:
        started_ranks = saved["LOCAL_RANK"] is None and env.get("LOCAL_RANK") is not None
        if started_ranks:
            from nbr_contrast.utils.dist import destroy

            destroy()
        for key, value in saved.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value


def shared_run_stamp(env: Mapping[str, str]) -> str | None:
    """A run-folder name every rank of an ``srun`` step or a ``torchrun`` job agrees on.

    ``hydra.run.dir`` and ``hydra.sweep.dir`` end in ``${oc.env:NBR_CONTRAST_RUN_STAMP,<launch
    time>}``; processes started by a cluster launcher read the launch time from their own
    clocks, so they could disagree by a second. This names the folder after what they
    share instead: ``slurm<job id>.<step id>`` for a multi-task SLURM step,
    ``torchrun-<rdzv id>`` for ``torchrun`` with a rendezvous id (``--standalone`` makes
    one).

    Args:
        env: The process environment.

    Returns:
        The shared name, or ``None`` outside such a launch.
    """
    if "SLURM_JOB_ID" in env and "SLURM_STEP_ID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        return f"slurm{env['SLURM_JOB_ID']}.{env['SLURM_STEP_ID']}"
    run_id = env.get("TORCHELASTIC_RUN_ID", "none")
    if run_id != "none" and int(env.get("WORLD_SIZE", 1)) > 1:
        return f"torchrun-{run_id}"
    return None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from nbr_contrast.methods.base import NonFiniteLossError
    from nbr_contrast.reliability import RunInterrupted, is_user_error, resume_command
    from nbr_contrast.reliability.run_lock import discard_if_unused
    from nbr_contrast.tasks import run_task

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    hydra_cfg = HydraConfig.get()
    cfg.output_dir = hydra_cfg.runtime.output_dir
    try:
        with rank_launch_env(cfg.output_dir, list(hydra_cfg.overrides.task)):
            result = run_task(cfg)
    except RunInterrupted as stop:
        print(f"{stop} Resume with:\n  {resume_command(cfg)}", file=sys.stderr)
        sys.exit(128 + stop.signum)
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
    try:
        check_overrides(sys.argv[1:])
    except OverrideError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    FAILED_JOBS.clear()
    try:
        _hydra_main()
    finally:
        from nbr_contrast.reliability.run_lock import release_all

        release_all()
    if FAILED_JOBS:
        print(
            f"Error: {len(FAILED_JOBS)} job(s) of the sweep failed; they are listed in "
            f"{FAILURES} in the sweep folder.",
            file=sys.stderr,
        )
        sys.exit(FAILED_JOBS[0])
