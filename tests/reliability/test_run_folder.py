"""A run owns its folder: a second run there refuses; stale locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nbr_contrast.app import cli
from nbr_contrast.app.reliability import run_lock
from nbr_contrast.app.reliability.run_lock import RunFolderBusyError, owns_runs, run_folder
from nbr_contrast.app.schemas import CONF_DIR, register_configs

from ..runs import last_wins
from .conftest import SMALL, TINY


def _lock_for(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / run_lock.LOCK_NAME
    owner = {"pid": pid, "host": host or socket.gethostname(), "started": "earlier"}
    lock.write_text(json.dumps(owner))
    return lock


@pytest.fixture
def live_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_second_run_in_a_busy_folder_refuses_before_writing_anything(
    tiny_data: list[str],
    tmp_path: Path,
    live_pid: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    lock = _lock_for(run, live_pid)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv = [*TINY, *tiny_data, *SMALL, "optim.lr=0.1", f"hydra.run.dir={run}"]
    monkeypatch.setattr(sys, "argv", ["nbr_contrast", *last_wins(argv)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"hydra.run.dir='{run}' is in use by another run (pid {live_pid}" in lines[0]
    assert sorted(p.name for p in run.iterdir()) == [run_lock.LOCK_NAME]
    assert json.loads(lock.read_text())["pid"] == live_pid


def test_lock_of_a_dead_process_is_taken_over_and_released(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    lock = _lock_for(tmp_path / "run", int(dead.stdout))
    with run_folder(tmp_path / "run", env={}):
        owner = json.loads(lock.read_text())
        assert owner["pid"] != int(dead.stdout)
        with run_folder(tmp_path / "run", env={}):  # the same process again: allowed
            pass
        assert lock.exists()
    assert not lock.exists()


def test_lock_from_another_host_is_reported(tmp_path: Path) -> None:
    _lock_for(tmp_path / "run", 1, host="another-node")
    with (
        pytest.raises(RunFolderBusyError, match="pid 1 on another-node"),
        run_folder(tmp_path / "run", env={}),
    ):
        pass


def test_ranks_started_for_a_run_write_into_its_folder_without_the_lock(
    tmp_path: Path, live_pid: int
) -> None:
    _lock_for(tmp_path / "run", live_pid)
    assert owns_runs({}) and owns_runs({"LOCAL_RANK": "0", "RANK": "0"})
    assert not owns_runs({"LOCAL_RANK": "1"}) and not owns_runs({"SLURM_PROCID": "3"})
    with run_folder(tmp_path / "run", env={"LOCAL_RANK": "1"}):
        pass


def test_default_folders_of_runs_started_in_the_same_second_differ() -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        a = compose(config_name="config", return_hydra_config=True)
        b = compose(config_name="config", return_hydra_config=True)
    assert a.hydra.run.dir != b.hydra.run.dir
    assert a.hydra.sweep.dir != b.hydra.sweep.dir


def test_an_unusable_run_folder_gives_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["nbr_contrast", f"hydra.run.dir={blocker / 'run'}"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"Error: hydra.run.dir={str(blocker / 'run')!r} cannot be used as a run folder (Not a "
        "directory); set hydra.run.dir to a folder this user can write."
    ]


def test_an_empty_lock_left_by_a_crash_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "run" / "run.lock"
    lock.parent.mkdir()
    lock.write_text("")
    old = lock.stat().st_mtime - 60
    os.utime(lock, (old, old))
    with run_folder(tmp_path / "run", env={}):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_an_empty_lock_being_written_is_named_as_such(tmp_path: Path) -> None:
    lock = tmp_path / "run" / "run.lock"
    lock.parent.mkdir()
    lock.write_text("")
    with (
        pytest.raises(RunFolderBusyError, match="is being taken by another run right now"),
        run_folder(tmp_path / "run", env={}),
    ):
        pass
