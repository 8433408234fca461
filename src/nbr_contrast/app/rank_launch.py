"""Rank-launch plumbing: how every process of a distributed run finds its job's folder.

Every rank of one run (or of one multirun job) writes into the same folder. Lightning's
``ddp`` launcher re-runs the command line for each extra local rank; the job that starts
them records its folder and overrides in the environment (:func:`rank_launch_env`), so a
started rank runs exactly that job there (:func:`rank_command`) instead of the whole sweep
with a folder of its own. Ranks started by ``srun`` or ``torchrun`` name the folder after
the SLURM step or the rendezvous id (:func:`shared_run_stamp`) instead of the launch time,
which each process would read from its own clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping, Sequence

from nbr_contrast.utils.dist import destroy

JOB_DIR_ENV = "NBR_CONTRAST_JOB_DIR"
JOB_OVERRIDES_ENV = "NBR_CONTRAST_JOB_OVERRIDES"
RUN_STAMP_ENV = "NBR_CONTRAST_RUN_STAMP"
# what Lightning's launchers write into the launching process's environment
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra flags that take their value as the next argument
VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def hydra_quote(value: str) -> str:
    r"""``value`` as a quoted string of Hydra's override grammar (spaces, non-ASCII, quotes).

    Inside single quotes Hydra reads ``\'`` as a quote, and a backslash as an escape only
    where backslashes run up to a quote or the end; those runs are doubled.
    """
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


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
