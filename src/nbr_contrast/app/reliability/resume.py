"""Exact resume: RNG states and loader position in the checkpoint; which checkpoint to use.

Lightning restores the model, optimisers, schedulers, loops and callback states (the
neighbour banks and dataset graph live in ``NeighbourIndexCallback``'s state; the EMA
bookkeeping is a model buffer). Two things it leaves out are added here by
:class:`ResumeStateCallback`: the Python, NumPy and torch RNG states, and where the
training loader stood, so an interrupted epoch continues with the batch it would have
drawn next, in the same order and with the same augmentations.
"""

from __future__ import annotations

import os
import random
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from nbr_contrast.app.rank_launch import hydra_quote
from nbr_contrast.app.reliability.checkpoint_io import (
    RunStateCallback,
    check_kind,
    read_checkpoint,
    read_run_config,
    readable,
)
from nbr_contrast.app.reliability.validation import ConfigError

OUTPUTS_ROOT = Path("outputs")
RESUME_NOTE = "RESUME.md"
RESUME_KEYS = ("method.name", "backbone.name", "data.name")
# tasks that train a new head on the backbone of ``ckpt`` and resume from their own folder
HEAD_TASKS = ("linear", "finetune")
# settings a resumed run must share with its checkpoint: they shape the training trajectory
# (a group name covers every field of the group)
TRAJECTORY_KEYS = (
    "seed",
    "method",
    "backbone",
    "optim",
    "search",
    "data.name",
    "data.batch_size",
    "data.views",
    "data.image_size",
    "data.mean",
    "data.std",
    "data.num_classes",
    "data.class_list",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.precision",
    "trainer.limit_train_batches",
    "trainer.accumulate_grad_batches",
    "trainer.gradient_clip_val",
    "trainer.sync_batchnorm",
)
MISSING_VALUE = "<missing>"


def _rng_state() -> dict[str, Any]:
    """The RNG states of this process (only tensors and plain values, for safe loading)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    random.setstate(state["python"])
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if cuda and torch.cuda.is_available():
        for device, device_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)


class ResumeStateCallback(RunStateCallback):
    """Saves and restores the RNG states, so a resumed run's random draws are the same.

    The states are captured when the checkpoint is written and put back just before the
    first resumed batch is drawn, so the augmentations (and CLIM's mixing ratios) match an
    uninterrupted run. The loader's position travels in the datamodule's own state
    (:meth:`~nbr_contrast.data.datamodule.ViewsDataModule.state_dict`). Under DDP only
    rank 0's RNG state reaches the file; other ranks keep their freshly seeded state.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """RNG states of this process."""
        rank = self._trainer.global_rank if self._trainer is not None else 0
        return {"rank": rank, "rng": _rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the RNG states until the first resumed batch."""
        self._pending = dict(state_dict) if state_dict else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Put the saved RNG states back (the last hook before the first batch is drawn)."""
        if self._pending is not None and int(self._pending["rank"]) == trainer.global_rank:
            _set_rng_state(self._pending["rng"])
        self._pending = None


def _newest_last(method: str, root: Path) -> Path:
    folder = root / method
    found = sorted(folder.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(
            f"ckpt=last: no run of method {method} has a checkpoints/last.ckpt under "
            f"{str(folder)!r}; pass ckpt=PATH/TO/last.ckpt."
        )
    return found[-1]


def _resume_checkpoint(folder: Path) -> Path:
    """``last.ckpt`` of a run's ``checkpoints`` folder, or its newest readable checkpoint.

    A run killed while writing leaves an orphan ``.<name>.<random>.tmp`` (removed here) and
    possibly no ``last.ckpt``; a damaged ``last.ckpt`` is passed over too, with a warning.

    Raises:
        ConfigError: If the folder holds no readable checkpoint.
    """
    for orphan in folder.glob(".*.tmp"):
        orphan.unlink(missing_ok=True)
    last = folder / "last.ckpt"
    if last.is_file() and readable(last):
        return last
    older = sorted(
        (p for p in folder.glob("*.ckpt") if p != last and not p.name.startswith("nonfinite")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for ckpt in older:
        if readable(ckpt):
            state = "unreadable" if last.exists() else "missing"
            warnings.warn(
                f"resume=true: {str(last)!r} is {state}; resuming from {str(ckpt)!r}, the "
                "newest readable checkpoint of the run.",
                stacklevel=2,
            )
            return ckpt
    if last.exists():
        read_checkpoint(last, "resume=true: checkpoint")
    raise ConfigError(
        f"resume=true but {str(last)!r} does not exist; pass the folder of the run to "
        "resume as hydra.run.dir=outputs/<method>/<run> (its RESUME.md has the command)."
    )


def resolve_checkpoint(cfg: DictConfig, root: Path = OUTPUTS_ROOT) -> str | None:
    """The checkpoint a task starts from, with ``ckpt=last`` and ``resume=true`` resolved.

    With ``resume=true`` that is the run folder's own checkpoint; ``task=linear`` and
    ``task=finetune`` (:data:`HEAD_TASKS`) then still name the pretrained backbone with
    ``ckpt`` (:func:`pretrained_checkpoint`).

    Args:
        cfg: The run config.
        root: Folder holding ``<method>/<run>/`` run folders (Hydra's ``outputs/``).

    Returns:
        The checkpoint path, or ``None`` for a fresh fit.

    Raises:
        ConfigError: If ``resume`` and ``ckpt`` are both set for ``fit``, ``resume=true`` is
            used with a task that does not train, or there is no checkpoint to resume from.
        FileNotFoundError: Naming ``ckpt`` when the file does not exist.
    """
    ckpt = None if cfg.ckpt is None else str(cfg.ckpt)
    task = str(cfg.task.name)
    if cfg.resume:
        if task not in ("fit", *HEAD_TASKS):
            raise ConfigError(
                f"resume=true applies to task=fit, linear and finetune, not task={task}."
            )
        if ckpt is not None and task == "fit":
            raise ConfigError(
                f"resume=true and ckpt={ckpt} both set; use resume=true with "
                "hydra.run.dir=<run folder> to continue a run, or ckpt=PATH alone."
            )
        return str(_resume_checkpoint(Path(cfg.output_dir) / "checkpoints"))
    return pretrained_checkpoint(cfg, root)


def pretrained_checkpoint(cfg: DictConfig, root: Path = OUTPUTS_ROOT) -> str | None:
    """``ckpt`` with ``ckpt=last`` resolved (the newest run of ``method.name``), checked.

    Raises:
        ConfigError: For ``ckpt=last`` when no run of the method has a ``last.ckpt``.
        FileNotFoundError: Naming ``ckpt`` when the file does not exist.
    """
    ckpt = None if cfg.ckpt is None else str(cfg.ckpt)
    if ckpt == "last":
        return str(_newest_last(str(cfg.method.name), root))
    if ckpt is not None and "://" not in ckpt and not Path(ckpt).is_file():
        raise FileNotFoundError(
            f"ckpt={ckpt} does not exist. Pass the path of a checkpoint written by a run "
            "(its folder's checkpoints/last.ckpt), or ckpt=last for the newest run."
        )
    return ckpt


def _flat(node: Any, key: str, depth: int) -> dict[str, Any]:
    """``{dotted key: value}`` of ``node``, ``depth`` levels down (deeper values whole)."""
    if depth == 0 or not isinstance(node, dict):
        return {key: node}
    flat: dict[str, Any] = {}
    for name, value in node.items():
        flat.update(_flat(value, f"{key}.{name}", depth - 1))
    return flat


def _weight_shape_keys(cfg: dict[str, Any]) -> tuple[str, ...]:
    """Settings that size saved weights or banks: ``backbone.*``, ``method.*_dim``/``*_size``."""
    method = [f"method.{n}" for n in cfg.get("method") or {} if n.endswith(("_dim", "_size"))]
    backbone = [f"backbone.{n}" for n in cfg.get("backbone") or {}]
    return (*backbone, *method, "data.num_classes")


def trajectory_changes(
    saved: dict[str, Any], now: dict[str, Any], keys: tuple[str, ...] = ()
) -> list[str]:
    """The ``keys`` settings of ``now`` that differ from ``saved``.

    Args:
        saved: The checkpoint's run config (a plain dict).
        now: This run's config (a plain dict).
        keys: Settings or whole groups to compare (default :data:`TRAJECTORY_KEYS`).

    Returns:
        ``key=new (was old)`` for every difference, in key order.
    """
    changes = []
    for key in keys or TRAJECTORY_KEYS:
        group, _, name = key.partition(".")
        old_group, new_group = saved.get(group), now.get(group)
        if name:
            old_group = {name: (old_group or {}).get(name, MISSING_VALUE)}
            new_group = {name: (new_group or {}).get(name, MISSING_VALUE)}
        old = _flat(old_group, group, 1)
        new = _flat(new_group, group, 1)
        for k in sorted(set(old) | set(new)):
            before, after = old.get(k, MISSING_VALUE), new.get(k, MISSING_VALUE)
            if before != after and MISSING_VALUE not in (before, after):
                changes.append(f"{k}={after} (was {before})")
    return changes


def check_resumable(cfg: DictConfig, ckpt: str | Path) -> None:
    """Fail early when a checkpoint was written by an incompatible run.

    Any start from a checkpoint needs the same ``method.name``, ``backbone.name`` and
    ``data.name``, and the same settings that size its weights (``backbone.*``,
    ``method.*_dim``/``*_size``, ``data.num_classes``). ``resume=true`` continues the
    trajectory, so every setting that shapes it (:data:`TRAJECTORY_KEYS`: batch size, views,
    optimiser and schedule, method, backbone, search, seed, ...) must match;
    ``trainer.max_epochs`` may grow, and logging, progress, paths and loader workers may
    change (not the workers for ``data=webdataset``, whose order they shape).

    Raises:
        ConfigError: Naming the first differing of the three names, or every differing
            weight-size setting (``resume=true``: trajectory setting), in one line with
            the fix.
    """
    setting = "resume=true: checkpoint" if cfg.resume else "ckpt"
    saved_cfg = read_run_config(ckpt, setting)
    check_kind(saved_cfg, ckpt, str(cfg.task.name), setting)
    for key in RESUME_KEYS:
        group, name = key.split(".")
        old = saved_cfg.get(group, {}).get(name)
        new = cfg[group][name]
        if old is not None and str(old) != str(new):
            raise ConfigError(
                f"{key}={new} but the checkpoint {str(ckpt)!r} was trained with {key}={old}; "
                f"resume with {key}={old} (the run's RESUME.md has the full command)."
            )
    now: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if not cfg.resume:
        changes = trajectory_changes(saved_cfg, now, _weight_shape_keys(now))
        if changes:
            raise ConfigError(
                f"ckpt={str(ckpt)!r} holds weights of other sizes than this run's: "
                f"{', '.join(changes)}; start from it with the checkpoint's values."
            )
        return
    # shards are dealt to ranks x loader workers: there the worker count shapes the order
    workers = ("data.num_workers",) if now["data"]["name"] == "webdataset" else ()
    changes = trajectory_changes(saved_cfg, now, TRAJECTORY_KEYS + workers)
    if changes:
        raise ConfigError(
            f"resume=true with settings that change the run's trajectory: {', '.join(changes)}; "
            "resume with the run's own settings (its RESUME.md has the command; only "
            "trainer.max_epochs may grow), or start a new run without resume=true."
        )


def launch_overrides() -> list[str] | None:
    """The command-line overrides of this Hydra run (``None`` outside the CLI)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def resume_command(cfg: DictConfig) -> str:
    """The command that continues this run from its ``checkpoints/last.ckpt``.

    From the CLI: this interpreter with the same overrides (``task=linear`` and
    ``task=finetune`` keep their ``ckpt``) plus ``resume=true hydra.run.dir=<run folder>``,
    the folder quoted for Hydra's override grammar and the whole line for the shell (paths
    with spaces, quotes or non-ASCII letters work).
    From the notebook API: the matching ``api.compose`` call.
    """
    out = str(Path(cfg.output_dir).resolve())
    overrides = launch_overrides()
    head = str(cfg.task.name) in HEAD_TASKS
    if overrides is None and head:
        return (
            f"api.evaluate({str(cfg.ckpt)!r}, {str(cfg.task.name)!r}, [<the same overrides>, "
            f"'resume=true'], output_dir={out!r})"
        )
    if overrides is None:
        return f"api.fit(api.compose([<the same overrides>, 'resume=true'], output_dir={out!r}))"
    dropped = ("resume", "hydra.run.dir") if head else ("resume", "ckpt", "hydra.run.dir")
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in dropped]
    words = [shlex.quote(sys.executable), "-m nbr_contrast", *(shlex.quote(o) for o in keep)]
    words.append("resume=true")
    words.append(shlex.quote(f"hydra.run.dir={hydra_quote(out)}"))
    return " ".join(words)


def write_resume_note(cfg: DictConfig) -> Path:
    """Write ``RESUME.md`` in the run folder with the exact resume command."""
    command = resume_command(cfg)
    cli = " -m nbr_contrast " in command
    block, cd = ("bash", f"cd {shlex.quote(os.getcwd())}\n") if cli else ("python", "")
    every = int(cfg.trainer.checkpoint_every_n_steps)
    when = "at every epoch end" + (f" and every {every} steps" if every else "")
    tail = (
        "The settings must stay as they were.\n"
        if str(cfg.task.name) in HEAD_TASKS
        else "Change `trainer.max_epochs` on that line to train longer; the other settings must\n"
        "stay as they were.\n"
    )
    text = (
        "# Resuming this run\n\n"
        f"`checkpoints/last.ckpt` is written {when}, and when the run receives SIGTERM or\n"
        "SIGINT (Ctrl-C). To continue from it (model, optimiser, schedule, EMA, neighbour\n"
        "banks, RNG states and the position in the epoch), run from the same folder:\n\n"
        f"```{block}\n{cd}{command}\n```\n\n{tail}"
    )
    path = Path(cfg.output_dir) / RESUME_NOTE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
