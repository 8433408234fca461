"""Damaged, missing and unwritable checkpoints: one clear line, or the newest good one."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

from nbr_contrast.app import api, cli
from nbr_contrast.app.reliability import (
    AtomicCheckpointIO,
    ConfigError,
    checkpoint_io,
    resolve_checkpoint,
)
from nbr_contrast.app.reliability.checkpoint_io import CheckpointWriteError, DiskFullError


def test_checkpoints_are_readable_by_colleagues(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        AtomicCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    finally:
        os.umask(old)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == 0o644


def test_a_full_disk_is_named_and_the_old_checkpoint_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, target)

    def no_space(obj: Any, f: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", no_space)
    with pytest.raises(DiskFullError, match="No space left on the device while writing"):
        AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(2)}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=False)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.EDQUOT])
def test_an_os_error_under_torchs_writer_error_is_named(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch reports a failed write as a RuntimeError whose context is the OSError."""
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, target)

    def refused(obj: Any, f: Any) -> None:
        try:
            raise OSError(code, os.strerror(code))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672]") from None

    monkeypatch.setattr(checkpoint_io.torch, "save", refused)
    with pytest.raises(CheckpointWriteError) as err:
        AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(2)}, target)
    monkeypatch.undo()
    message = str(err.value)
    assert f"while writing {str(target)!r} ({errno.errorcode[code]})" in message
    assert "the previous checkpoint there is intact" in message and "\n" not in message
    assert torch.load(target, weights_only=False)["step"] == 1


def test_a_file_size_limit_is_named(tmp_path: Path) -> None:
    """A real EFBIG: the process's file-size limit is below the checkpoint's size."""
    script = (
        "import resource, torch\n"
        "from nbr_contrast.app.reliability.checkpoint_io import AtomicCheckpointIO\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "AtomicCheckpointIO().save_checkpoint(\n"
        f"    {{'x': torch.zeros(1_000_000)}}, {str(tmp_path / 'last.ckpt')!r}\n"
        ")\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "CheckpointWriteError: The file is larger than this file system or the process's" in last
    assert "(EFBIG); no earlier checkpoint was there. Raise the limit (ulimit -f)" in last
    assert list(tmp_path.iterdir()) == []


def _error_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """The one ``Error:`` line of ``python -m nbr_contrast ARGV``, asserted to exit 2."""
    monkeypatch.setattr(sys, "argv", ["nbr_contrast", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _damaged(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    torch.save({"hyper_parameters": {"cfg": {"x": list(range(2000))}}}, path)
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    return path


@pytest.mark.parametrize("task", ["knn", "linear", "export"])
@pytest.mark.parametrize("kind", ["truncated", "empty", "foreign"])
def test_a_damaged_checkpoint_gives_one_line(
    task: str,
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt = _damaged(kind, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv = [f"task={task}", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"]
    lines = [_error_line(argv, monkeypatch, capsys)]
    expected = "is not a checkpoint written by task=fit" if kind == "foreign" else "cannot be read"
    assert f"ckpt={str(ckpt)!r} {expected}" in lines[0]


def test_resume_without_a_good_last_ckpt_uses_the_newest_readable_one(
    run_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """As after SIGKILL during a write: a half-written last.ckpt and an orphan .tmp file."""
    run = tmp_path / "run"
    api.fit(run_cfg(run))
    folder = run / "checkpoints"
    good = folder / "epoch000.ckpt"
    last = folder / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    orphan = folder / ".last.ckpt.k1ll3d.tmp"
    orphan.write_bytes(b"\0" * 4096)
    with pytest.warns(UserWarning, match="is unreadable; resuming from .*epoch000.ckpt"):
        summary = api.fit(run_cfg(run, "resume=true", "trainer.max_epochs=2"))
    assert summary["resumed_from"] == str(good)
    assert summary["epochs"] == 2 and not orphan.exists()
    assert torch.load(last, weights_only=False)["epoch"] == 1


def test_resume_with_no_readable_checkpoint_says_so(
    run_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(ConfigError, match=r"last\.ckpt' cannot be read, the file is truncated"):
        resolve_checkpoint(run_cfg(tmp_path / "run", "resume=true"))


def test_a_head_checkpoint_given_for_pretraining_is_named(
    run_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pretrained = api.fit(run_cfg(tmp_path / "pretrain", "knn_report=false"))["checkpoint"]
    linear = tmp_path / "linear"
    api.evaluate(pretrained, "linear", ["task.epochs=1", "task.batch_size=16"], output_dir=linear)
    head = linear / "checkpoints" / "last.ckpt"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    for task in ("knn", "export", "fit"):
        argv = [f"task={task}", f"ckpt={head}", f"hydra.run.dir={tmp_path / task}"]
        lines = [_error_line(argv, monkeypatch, capsys)]
        assert f"ckpt={head} is a task=linear checkpoint" in lines[0]
        assert lines[0].endswith(f"pass the pretraining checkpoint it was made from: {pretrained}.")
        assert not (tmp_path / task).exists()
