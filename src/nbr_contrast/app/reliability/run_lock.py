"""A run owns its folder: ``run.lock`` names the process writing there; others refuse.

Two runs writing into one folder corrupt each other (one's ``overrides.yaml`` and
``RESUME.md`` beside the other's checkpoints). The first process to run in a folder creates
``run.lock`` (pid, host, start time) with an exclusive create; a second process finds it,
checks that the owner is alive, and refuses with one line naming ``hydra.run.dir``. A lock
left behind by a process that died (SIGKILL, a crashed node) on this host is taken over, so
``resume=true`` of a killed run works; a lock from another host cannot be checked and is
reported with the fix. Only the process that owns a run takes the lock: ranks started for
it (``LOCAL_RANK``/``RANK``/``SLURM_PROCID`` above 0) write into the owner's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from nbr_contrast.app.reliability.validation import ConfigError

LOCK_NAME = "run.lock"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK")
_held: dict[Path, int] = {}


class RunFolderBusyError(ConfigError):
    """Another live run owns the folder."""


class UnusableFolderError(ConfigError):
    """The run folder cannot be created or written."""


def owns_runs(env: Mapping[str, str]) -> bool:
    """Whether this process owns the runs it starts (not a rank started for another's run)."""
    return all(env.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


EMPTY_LOCK_GRACE_S = 10.0
"""An empty lock younger than this is being written; an older one was left by a crash."""


def _read(lock: Path) -> dict[str, Any]:
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _age(lock: Path) -> float:
    """Seconds since ``lock`` was last written (0 if it is gone)."""
    try:
        return time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _create(lock: Path) -> bool:
    """Create ``lock`` for this process; ``False`` if it exists."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": started}, f)
    return True


def _busy(folder: Path, owner: dict[str, Any], setting: str) -> RunFolderBusyError:
    who = f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"
    return RunFolderBusyError(
        f"{setting}={str(folder)!r} is in use by another run ({who}); give this run its "
        "own folder (drop hydra.run.dir or set another one), or wait for that run to end "
        f"(if it is gone, delete {str(folder / LOCK_NAME)!r})."
    )


def acquire(folder: str | Path, setting: str = "hydra.run.dir") -> None:
    """Take ``<folder>/run.lock`` for this process (again, if it already holds it).

    Args:
        folder: The run (or sweep) folder.
        setting: The config key that names it, for the messages.

    Raises:
        RunFolderBusyError: If a live process (or one on another host) holds the folder.
        UnusableFolderError: If the folder cannot be created or written.
    """
    folder = Path(folder).resolve()
    if folder in _held:
        _held[folder] += 1
        return
    try:
        _lock(folder, setting)
    except OSError as err:
        raise UnusableFolderError(
            f"{setting}={str(folder)!r} cannot be used as a run folder "
            f"({err.strerror or err}); set {setting} to a folder this user can write."
        ) from err
    _held[folder] = 1


def _lock(folder: Path, setting: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    if _create(lock):
        return
    owner = _read(lock)
    host, pid = owner.get("host"), owner.get("pid")
    mine = host == socket.gethostname() and pid == os.getpid()
    stale = host == socket.gethostname() and isinstance(pid, int) and not _alive(pid)
    if not owner and _age(lock) < EMPTY_LOCK_GRACE_S:
        raise RunFolderBusyError(
            f"{setting}={str(folder)!r} is being taken by another run right now (its "
            f"{LOCK_NAME} is still empty); give this run its own folder, or try again."
        )
    if not (mine or stale or not owner):  # an older empty lock: its writer died
        raise _busy(folder, owner, setting)
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()
    if not _create(lock):
        raise _busy(folder, _read(lock), setting)


def release(folder: str | Path) -> None:
    """Give up one hold of ``folder``; the lock file goes with the last."""
    folder = Path(folder).resolve()
    if folder not in _held:
        return
    _held[folder] -= 1
    if _held[folder] == 0:
        del _held[folder]
        with contextlib.suppress(FileNotFoundError):
            (folder / LOCK_NAME).unlink()


RUN_RECORDS = (".hydra", LOCK_NAME, "RESUME.md", "csv", "tensorboard", "checkpoints")
"""What a run writes before its first checkpoint: Hydra's bookkeeping, the lock, the resume
note and the loggers' first lines. A folder holding only these (and an empty
``checkpoints/``) has nothing a user could keep."""


def discard_if_unused(folder: str | Path, log_name: str) -> bool:
    """Remove a run folder that holds nothing worth keeping.

    A run that fails before its first checkpoint (a setting that cannot work, found while
    composing, building, in ``setup``, in the first batch or at the first step) would leave
    a folder with only :data:`RUN_RECORDS` and Hydra's ``<job>.log`` (``log_name``). A folder
    with a checkpoint, a summary or anything else is kept.

    Returns:
        Whether the folder was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        return False
    if any(p.name not in {*RUN_RECORDS, log_name} for p in folder.iterdir()):
        return False
    shutil.rmtree(folder)
    return True


def release_all() -> None:
    """Release every folder this process holds (when the CLI exits, however it exits)."""
    for folder in list(_held):
        _held[folder] = 1
        release(folder)


@contextlib.contextmanager
def run_folder(folder: str | Path, env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Own ``folder`` for the block (no-op in ranks started for another process's run).

    Raises:
        RunFolderBusyError: If another live run owns it.
    """
    if not owns_runs(os.environ if env is None else env):
        yield
        return
    acquire(folder)
    try:
        yield
    finally:
        release(folder)


class RunFolderCallback(Callback):
    """Hydra callback: own the run (or sweep) folder before Hydra writes into it.

    Hydra saves ``.hydra/overrides.yaml`` before the task starts; taking the lock here, when
    the run starts, keeps a refused run from overwriting the owner's files.
    """

    def _take(self, config: DictConfig, key: str) -> None:
        if not owns_runs(os.environ):
            return
        folder = str(OmegaConf.select(config, key))
        try:
            acquire(folder, key)
        except ConfigError as busy:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"Error: {busy}", file=sys.stderr)
            raise SystemExit(2) from None

    def _drop(self, config: DictConfig, key: str) -> None:
        if owns_runs(os.environ):
            release(str(OmegaConf.select(config, key)))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Own ``hydra.run.dir``."""
        self._take(config, "hydra.run.dir")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Release ``hydra.run.dir``."""
        self._drop(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Own ``hydra.sweep.dir``."""
        self._take(config, "hydra.sweep.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Release ``hydra.sweep.dir``."""
        self._drop(config, "hydra.sweep.dir")
