"""Settings that cannot work fail before any work starts, with one line naming the fix.

Most checks need only the config (:func:`validate_config`); the dataset-dependent ones
(``method.knn_k``, ``task.k`` against the number of training images) take that number.
:func:`is_user_error` tells the CLI which exceptions are configuration mistakes (printed
as one ``Error:`` line, exit code 2) and which are bugs (full traceback).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from nbr_contrast.data.image_source import DataSourceError
from nbr_contrast.utils.ranges import RULES

OPTIMIZERS = ("sgd", "lars", "adamw")
PRECISIONS = (
    "auto",
    "32-true",
    "32",
    "16-mixed",
    "16",
    "bf16-mixed",
    "bf16",
    "16-true",
    "bf16-true",
    "64-true",
    "64",
    "transformer-engine",
    "transformer-engine-float16",
)
SINGLE_VIEW_METHODS = ("cone", "supervised")
SUPERVISED_METHODS = ("cone", "supervised")
SETTING = re.compile(
    r"\b(?:method|backbone|data|trainer|optim|search|logger|task)\.[a-z_]+\b|\b(?:ckpt|resume)\b"
)


# groups whose numeric fields are range-checked by name (the trainer's are checked one by one;
# a method's constructor checks its arguments with the same rules, and more of its own)
CHECKED_GROUPS = ("method", "backbone", "data", "optim", "search", "task")


TRAINER_AT_LEAST_1 = (
    "num_nodes",
    "log_every_n_steps",
    "accumulate_grad_batches",
    "check_val_every_n_epoch",
)


class ConfigError(ValueError):
    """A setting that cannot work; the message names the setting and the fix."""


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is a configuration mistake rather than a bug.

    True for :class:`ConfigError` and :class:`~nbr_contrast.data.image_source.DataSourceError`,
    and for a ``ValueError``/``FileNotFoundError`` whose message names a setting
    (``data.batch_size``, ``ckpt``, ...), the convention every check in this package follows.
    """
    if isinstance(error, ConfigError | DataSourceError):
        return True
    return isinstance(error, ValueError | FileNotFoundError) and bool(SETTING.search(str(error)))


def _fail(message: str) -> None:
    raise ConfigError(message)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def validate_config(cfg: DictConfig) -> None:
    """Check the settings that can be checked without loading data or building a model.

    Raises:
        ConfigError: For the first setting that cannot work.
    """
    o, t, d = cfg.optim, cfg.trainer, cfg.data
    _check_finite(cfg)
    validate_devices(t, torch.cuda.device_count())
    if str(o.name) not in OPTIMIZERS:
        _fail(f"optim.name={o.name!r} is unknown; valid: {', '.join(OPTIMIZERS)}.")
    if float(o.lr) <= 0:
        _fail(f"optim.lr={o.lr} must be positive.")
    if str(t.precision) not in PRECISIONS:
        _fail(f"trainer.precision={t.precision!r} is invalid; valid: {', '.join(PRECISIONS)}.")
    if int(t.checkpoint_every_n_steps) < 0:
        _fail(f"trainer.checkpoint_every_n_steps={t.checkpoint_every_n_steps} must be >= 0.")
    if int(t.finite_check_every_n_steps) < 0:
        _fail(f"trainer.finite_check_every_n_steps={t.finite_check_every_n_steps} must be >= 0.")
    if int(t.progress_bar_refresh_rate) < 1:
        _fail(f"trainer.progress_bar_refresh_rate={t.progress_bar_refresh_rate} must be >= 1.")
    if int(t.progress_every_n_logs) < 0:
        _fail(f"trainer.progress_every_n_logs={t.progress_every_n_logs} must be >= 0.")
    if str(t.compile_mode) not in COMPILE_MODES:
        _fail(
            f"trainer.compile_mode={t.compile_mode!r} is unknown; "
            f"valid: {', '.join(COMPILE_MODES)}."
        )
    if int(d.num_workers) < 0:
        _fail(f"data.num_workers={d.num_workers} must be >= 0.")
    if int(d.eval_batch_size) < 1:
        _fail(f"data.eval_batch_size={d.eval_batch_size} must be at least 1.")
    _check_trainer_counts(t)
    _check_ranges(cfg)
    if str(cfg.task.name) != "fit":
        return
    needed = 1 if str(cfg.method.name) in SINGLE_VIEW_METHODS else 2
    if len(d.views) < needed:
        _fail(
            f"data.views has {len(d.views)} view(s) but method={cfg.method.name} needs at "
            f"least {needed}; add views to data.views."
        )
    if int(d.batch_size) < 2:
        _fail(
            f"data.batch_size={d.batch_size} is too small to train: BatchNorm layers and "
            "in-batch negatives need at least 2 samples; set data.batch_size >= 2."
        )


def _leaves(node: Any, key: str, name: str) -> Iterator[tuple[str, str, Any]]:
    """``(setting, field name, value)`` of every value under ``node`` (list items by index)."""
    if isinstance(node, dict):
        for field, value in node.items():
            if not str(field).startswith("_"):
                yield from _leaves(value, f"{key}.{field}", str(field))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{key}[{i}]", name)
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield key, name, node


def _numbers(cfg: DictConfig, groups: Iterable[str]) -> Iterator[tuple[str, str, Any]]:
    for group in groups:
        if group in cfg and cfg[group] is not None:
            yield from _leaves(OmegaConf.to_container(cfg[group], resolve=True), group, group)


def _check_finite(cfg: DictConfig) -> None:
    """Reject NaN and infinite values in every group, naming the first."""
    for key, _, value in _numbers(cfg, (*CHECKED_GROUPS, "trainer")):
        if isinstance(value, float) and not math.isfinite(value):
            _fail(f"{key}={value} is not a finite number; set {key} to a number.")


def _check_ranges(cfg: DictConfig) -> None:
    """Check every numeric setting against the :data:`RULES` its field name matches.

    ``task.k`` (the kNN evaluation's neighbour counts) must be at least 1, where a method's
    ``k`` may be 0 (SNCLR's, for MoCo v3).
    """
    for key, name, value in _numbers(cfg, CHECKED_GROUPS):
        for rule in RULES:
            if rule.applies(name) and not rule.valid(value):
                _fail(f"{key}={value} {rule.requirement}; change {key}.")
        if key.startswith("task.k[") and value < 1:
            _fail(f"{key}={value} must be at least 1; change task.k.")


def _check_trainer_counts(t: DictConfig) -> None:
    for name in TRAINER_AT_LEAST_1:
        if int(t[name]) < 1:
            _fail(f"trainer.{name}={t[name]} must be at least 1; change trainer.{name}.")
    if int(t.max_steps) == 0 or int(t.max_steps) < -1:
        _fail(f"trainer.max_steps={t.max_steps} must be at least 1, or -1 for no step limit.")
    if int(t.max_epochs) == -1 and int(t.max_steps) == -1:
        _fail(
            "trainer.max_epochs=-1 (no epoch limit) needs a step limit; set trainer.max_steps "
            "or trainer.max_epochs to at least 1."
        )
    if int(t.max_epochs) == 0 or int(t.max_epochs) < -1:
        _fail(
            f"trainer.max_epochs={t.max_epochs} must be at least 1 (or -1 for no epoch limit, "
            "with trainer.max_steps set)."
        )
    if t.gradient_clip_val is not None and float(t.gradient_clip_val) < 0:
        _fail(f"trainer.gradient_clip_val={t.gradient_clip_val} must be >= 0 (or null for none).")


def validate_neighbour_counts(setting: str, ks: Iterable[int], num_train: int) -> None:
    """Fail when a kNN neighbour count exceeds the training set.

    Args:
        setting: The config key of the counts (``method.knn_k`` or ``task.k``).
        ks: The counts.
        num_train: Number of training images.

    Raises:
        ConfigError: Naming ``setting``.
    """
    for k in ks:
        if int(k) < 1 or int(k) > num_train:
            _fail(
                f"{setting}: k={k} must be between 1 and the {num_train} training images; "
                f"lower {setting}."
            )


def validate_labels(cfg: DictConfig, unlabelled: int) -> None:
    """Refuse a supervised method when training images have no label.

    Args:
        cfg: The run config.
        unlabelled: Number of training images without a label.

    Raises:
        ConfigError: Naming ``method`` and the fix.
    """
    if unlabelled and str(cfg.method.name) in SUPERVISED_METHODS:
        _fail(
            f"method={cfg.method.name} trains on labels but {unlabelled} training image(s) of "
            f"data={cfg.data.name} have none; use a self-supervised method (e.g. "
            "method=nnclr) or labelled training data."
        )


def requested_devices(devices: object) -> int | None:
    """How many devices ``trainer.devices`` asks for (``None`` for ``auto`` or ``-1``)."""
    if isinstance(devices, int):
        return None if devices == -1 else devices
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return None
    if text.isdigit():
        return int(text)
    ids = [part for part in text.strip("[]").split(",") if part.strip()]
    return len(ids)


def validate_devices(trainer: DictConfig, gpus: int) -> None:
    """Refuse a device count the machine cannot give, instead of changing its meaning.

    ``trainer.devices=8`` on a machine without 8 GPUs would otherwise start 8 CPU
    processes (``accelerator=auto``) or fail deep inside Lightning (``accelerator=gpu``).
    An explicit ``trainer.accelerator=cpu`` (``trainer=ddp_cpu``) keeps CPU processes.

    Args:
        trainer: The ``trainer`` config.
        gpus: GPUs visible to this process.

    Raises:
        ConfigError: Naming what was asked, what is present and the fix.
    """
    wanted = requested_devices(trainer.devices)
    accelerator = str(trainer.accelerator)
    if wanted is None or accelerator == "cpu" or wanted <= max(gpus, 1):
        return
    if gpus == 0:
        _fail(
            f"trainer.devices={wanted} asks for {wanted} GPUs but no GPU is present, so it "
            f"would start {wanted} CPU processes: use trainer.devices=1 to train on the CPU, "
            f"or trainer=ddp_cpu trainer.devices={wanted} for distributed CPU processes (gloo)."
        )
    if accelerator in ("auto", "gpu", "cuda") and wanted > gpus:
        _fail(
            f"trainer.devices={wanted} asks for {wanted} GPUs but {gpus} are visible; set "
            f"trainer.devices={gpus} (the learning rate follows the global batch)."
        )
