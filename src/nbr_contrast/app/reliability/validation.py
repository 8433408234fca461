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

from nbr_contrast.app.reliability.errors import ConfigError, fail
from nbr_contrast.app.reliability.trainer_checks import check_trainer
from nbr_contrast.data.config import check_view
from nbr_contrast.data.image_source import DataSourceError
from nbr_contrast.methods.optimisation import check_optim
from nbr_contrast.neighbours.search import BACKENDS
from nbr_contrast.utils.ranges import RULES

TASKS = ("fit", "knn", "linear", "finetune", "export")
"""The values of ``task=`` (``task.name``)."""

SINGLE_VIEW_METHODS = ("cone", "supervised")
SUPERVISED_METHODS = ("cone", "supervised")
SETTING = re.compile(
    r"\b(?:method|backbone|data|trainer|optim|search|logger|task)\.[a-z_]+\b|\b(?:ckpt|resume)\b"
)


# groups whose numeric fields are range-checked by name (the trainer's are checked one by one;
# a method's constructor checks its arguments with the same rules, and more of its own)
CHECKED_GROUPS = ("method", "backbone", "data", "optim", "search", "task")


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is a configuration mistake rather than a bug.

    True for :class:`ConfigError` and :class:`~nbr_contrast.data.image_source.DataSourceError`,
    and for a ``ValueError``/``FileNotFoundError`` whose message names a setting
    (``data.batch_size``, ``ckpt``, ...), the convention every check in this package follows.
    """
    if isinstance(error, ConfigError | DataSourceError):
        return True
    return isinstance(error, ValueError | FileNotFoundError) and bool(SETTING.search(str(error)))


def validate_config(cfg: DictConfig) -> None:
    """Check the settings that can be checked without loading data or building a model.

    A setting of a feature the run does not use (the views of an evaluation task) is not
    checked.

    Raises:
        ConfigError: For the first setting that cannot work.
    """
    d = cfg.data
    _check_finite(cfg)
    _check_run(cfg)
    check_trainer(cfg.trainer, torch.cuda.device_count())
    try:
        check_optim(cfg.optim)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if str(cfg.search.backend) not in BACKENDS:
        fail(f"search.backend={cfg.search.backend!r} is unknown; valid: {', '.join(BACKENDS)}.")
    for name in ("ivf_threshold", "ivf_nprobe"):
        if int(cfg.search[name]) < 1:
            fail(f"search.{name}={cfg.search[name]} must be at least 1; change search.{name}.")
    if int(d.num_workers) < 0:
        fail(f"data.num_workers={d.num_workers} must be >= 0.")
    if int(d.eval_batch_size) < 1:
        fail(f"data.eval_batch_size={d.eval_batch_size} must be at least 1.")
    for name in ("mean", "std"):
        if len(d[name]) != 3:
            fail(f"data.{name}={list(d[name])} needs one value per colour channel (3).")
    for name in ("k", "temperature"):
        if not len(cfg.task[name]):
            fail(f"task.{name} is empty; give at least one value, e.g. task.{name}=[20].")
    _check_ranges(cfg)
    if str(cfg.task.name) != "fit":
        return
    _check_views(cfg)
    if int(d.batch_size) < 2:
        fail(
            f"data.batch_size={d.batch_size} is too small to train: BatchNorm layers and "
            "in-batch negatives need at least 2 samples; set data.batch_size >= 2."
        )


def _check_run(cfg: DictConfig) -> None:
    """The run-level settings: the task, the seed and the checkpoint."""
    if str(cfg.task.name) not in TASKS:
        fail(
            f"task.name={cfg.task.name!r} is unknown; choose a task with task=<{'|'.join(TASKS)}>."
        )
    if not 0 <= int(cfg.seed) < 2**32:
        fail(f"seed={cfg.seed} must be between 0 and 2**32 - 1.")
    if cfg.ckpt is not None and not str(cfg.ckpt).strip():
        fail(
            "ckpt is empty; pass a checkpoint path, ckpt=last for the newest run, or leave "
            "ckpt out."
        )


def _check_views(cfg: DictConfig) -> None:
    """Enough views for the method, each of them able to work."""
    views = cfg.data.views
    needed = 1 if str(cfg.method.name) in SINGLE_VIEW_METHODS else 2
    if len(views) < needed:
        fail(
            f"data.views has {len(views)} view(s) but method={cfg.method.name} needs at "
            f"least {needed}; add views to data.views."
        )
    for i, view in enumerate(views):
        try:
            check_view(view, f"data.views[{i}]")
        except ValueError as err:
            raise ConfigError(str(err)) from None


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
            fail(f"{key}={value} is not a finite number; set {key} to a number.")


def _check_ranges(cfg: DictConfig) -> None:
    """Check every numeric setting against the :data:`RULES` its field name matches.

    ``task.k`` (the kNN evaluation's neighbour counts) must be at least 1, where a method's
    ``k`` may be 0 (SNCLR's, for MoCo v3).
    """
    for key, name, value in _numbers(cfg, CHECKED_GROUPS):
        for rule in RULES:
            if rule.applies(name) and not rule.valid(value):
                fail(f"{key}={value} {rule.requirement}; change {key}.")
        if key.startswith("task.k[") and value < 1:
            fail(f"{key}={value} must be at least 1; change task.k.")


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
            fail(
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
        fail(
            f"method={cfg.method.name} trains on labels but {unlabelled} training image(s) of "
            f"data={cfg.data.name} have none; use a self-supervised method (e.g. "
            "method=nnclr) or labelled training data."
        )
