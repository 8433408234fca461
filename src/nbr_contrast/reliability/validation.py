"""Settings that cannot work fail before any work starts, with one line naming the fix.

Most checks need only the config (:func:`validate_config`); the dataset-dependent ones
(``method.knn_k``, ``task.k`` against the number of training images) take that number.
:func:`is_user_error` tells the CLI which exceptions are configuration mistakes (printed
as one ``Error:`` line, exit code 2) and which are bugs (full traceback).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from omegaconf import DictConfig

from nbr_contrast.data.sources import DataSourceError

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
SETTING = re.compile(
    r"\b(?:method|backbone|data|trainer|optim|index|logger|task)\.[a-z_]+\b|\b(?:ckpt|resume)\b"
)


class ConfigError(ValueError):
    """A setting that cannot work; the message names the setting and the fix."""


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is a configuration mistake rather than a bug.

    True for :class:`ConfigError` and :class:`~nbr_contrast.data.sources.DataSourceError`,
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
    if str(t.compile_mode) not in COMPILE_MODES:
        _fail(
            f"trainer.compile_mode={t.compile_mode!r} is unknown; "
            f"valid: {', '.join(COMPILE_MODES)}."
        )
    if int(d.num_workers) < 0:
        _fail(f"data.num_workers={d.num_workers} must be >= 0.")
    if int(d.eval_batch_size) < 1:
        _fail(f"data.eval_batch_size={d.eval_batch_size} must be at least 1.")
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
