"""How a rank started by Lightning, srun or torchrun finds its job's folder."""

from __future__ import annotations

import json

from nbr_contrast.app.rank_launch import (
    JOB_DIR_ENV,
    JOB_OVERRIDES_ENV,
    rank_command,
    rank_launch_env,
    shared_run_stamp,
)


def test_started_rank_runs_exactly_its_job_in_the_job_folder() -> None:
    argv = ["prog", "-m", "-cd", "/cfg", "method=nnclr,co2", "optim.lr=0.1,0.2"]
    env = {
        JOB_DIR_ENV: "/runs/sweep/1_co2",
        JOB_OVERRIDES_ENV: json.dumps(["method=co2", "optim.lr=0.1"]),
        "LOCAL_RANK": "1",
    }
    assert rank_command(argv, env) == [
        "prog",
        "-cd",
        "/cfg",
        "method=co2",
        "optim.lr=0.1",
        "hydra.run.dir='/runs/sweep/1_co2'",
        "hydra.job.name=train_ddp_process_1",
        "hydra.output_subdir=null",
    ]


def test_rank_zero_and_plain_runs_keep_their_command_line() -> None:
    argv = ["prog", "method=nnclr"]
    job = {JOB_DIR_ENV: "/runs/x", JOB_OVERRIDES_ENV: "[]"}
    assert rank_command(argv, {**job, "LOCAL_RANK": "0"}) is None
    assert rank_command(argv, {"LOCAL_RANK": "1"}) is None


def test_launch_env_is_set_inside_the_job_and_restored_after() -> None:
    env: dict[str, str] = {"MASTER_PORT": "1234"}
    with rank_launch_env("/runs/0_nnclr", ["optim.lr=0.1"], env):
        assert env[JOB_DIR_ENV] == "/runs/0_nnclr"
        assert json.loads(env[JOB_OVERRIDES_ENV]) == ["optim.lr=0.1"]
        env["MASTER_PORT"] = "5678"  # what a launcher does during the job
    assert env == {"MASTER_PORT": "1234"}


def test_cluster_launched_ranks_share_a_run_stamp() -> None:
    slurm = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "8"}
    assert shared_run_stamp(slurm) == "slurm77.0"
    assert shared_run_stamp({**slurm, "SLURM_NTASKS": "1"}) is None
    torchrun = {"TORCHELASTIC_RUN_ID": "abc", "WORLD_SIZE": "4"}
    assert shared_run_stamp(torchrun) == "torchrun-abc"
    assert shared_run_stamp({"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "4"}) is None
    assert shared_run_stamp({}) is None
