"""Config → trainer, datamodule, method and callbacks: the one place both CLI and API use."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from nbr_contrast.app.method_schemas import FROM_OTHER_GROUPS, METHODS, neighbour_method
from nbr_contrast.app.reliability import (
    AtomicCheckpointIO,
    ConfigError,
    ResumeStateCallback,
    RunConfigCallback,
    StopOnSignal,
    resolve_checkpoint,
)
from nbr_contrast.app.reliability.history import (
    EpochAveragesCallback,
    HistoryCSVLogger,
    resumed_step,
)
from nbr_contrast.data.datamodule import PIPELINES, ViewsDataModule
from nbr_contrast.data.sources import build_sources, check_classes
from nbr_contrast.methods.base import BaseMethod
from nbr_contrast.methods.hyperparameters import ArgumentError
from nbr_contrast.monitors.progress import PlainProgress
from nbr_contrast.neighbours.callback import NeighbourIndexCallback


def uses_gpu(cfg: DictConfig) -> bool:
    """Whether the trainer will run on a GPU."""
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def method_arguments(cfg: DictConfig) -> dict[str, Any]:
    """The method's ``_target_`` and constructor arguments, from the run config.

    ``method.*`` are its own arguments (``name`` names the option, not an argument); the
    backbone, the optimiser recipe, the number of classes and two trainer switches come
    from their groups. A backbone without ``image_size`` is built for the data's largest
    view.
    """
    method = to_container(cfg.method)
    method.pop("name", None)
    backbone = to_container(cfg.backbone)
    backbone["image_size"] = backbone.get("image_size") or max(int(v.size) for v in cfg.data.views)
    return {
        **method,
        "backbone": backbone,
        "optim": to_container(cfg.optim),
        "num_classes": int(cfg.data.num_classes),
        "channels_last": bool(cfg.trainer.channels_last),
        "finite_check_every_n_steps": int(cfg.trainer.finite_check_every_n_steps),
    }


def build_method(cfg: DictConfig) -> BaseMethod:
    """Instantiate the LightningModule ``cfg.method._target_`` names with its arguments.

    ``trainer.compile=true`` compiles its backbone and heads.
    """
    try:
        method = hydra.utils.instantiate(method_arguments(cfg), _recursive_=False, _convert_="all")
    except InstantiationException as err:  # the constructor's own one-line error
        cause = err.__cause__ or err
        if isinstance(cause, ArgumentError) and cause.name not in FROM_OTHER_GROUPS:
            raise ConfigError(_argument_line(cause, str(cfg.method.name))) from None
        raise cause from None
    if cfg.trainer.compile:
        for module in method.compile_targets():
            module.compile(mode=str(cfg.trainer.compile_mode))
    return method


def _argument_line(error: ArgumentError, method: str) -> str:
    """The command line's words for a constructor argument that cannot work."""
    setting = f"method.{error.name}={error.value}"
    parent = neighbour_method(method)
    if parent is not None and error.name in METHODS[method].fixed:
        return (
            f"{setting}: method={method} is method={parent} with {error.name}="
            f"{METHODS[method].fixed[error.name]} (its neighbour switch); for {setting} use "
            f"method={parent}."
        )
    return f"{setting} {error.reason} (method={method}); change method.{error.name}."


def build_datamodule(cfg: DictConfig) -> ViewsDataModule:
    """The run's datamodule (sources loaded); ``pipeline=auto`` follows the run's device."""
    datamodule = datamodule_of(cfg.data, int(cfg.seed), bool(cfg.trainer.compile))
    datamodule.use_gpu = uses_gpu(cfg)
    return datamodule


def datamodule_of(data: Any, seed: int = 0, compile_views: bool = False) -> ViewsDataModule:
    """The :class:`ViewsDataModule` of a ``data`` config, its sources loaded and checked.

    Args:
        data: A :class:`~nbr_contrast.data.config.DataConfig` (or a DictConfig of one).
        seed: Seed of the training order and augmentations.
        compile_views: Compile the GPU view pipeline (``trainer.compile``).

    Raises:
        ConfigError: For an unknown ``data.pipeline``.
        DataSourceError: When the data cannot be loaded.
        ValueError: Naming ``data.num_classes`` when the labels do not fit it.
    """
    if str(data.pipeline) not in PIPELINES:
        raise ConfigError(
            f"data.pipeline={data.pipeline!r} is unknown; valid: {', '.join(PIPELINES)}."
        )
    if not data.views:
        raise ConfigError("data.views is empty; configure at least one view.")
    sources = build_sources(data)
    check_classes(sources, int(data.num_classes), "data.num_classes")
    views = (
        OmegaConf.to_container(data.views, resolve=True)
        if isinstance(data, DictConfig)
        else data.views
    )
    return ViewsDataModule(
        train=sources.train,
        test=sources.test,
        reference=sources.reference,
        views=list(views),
        batch_size=int(data.batch_size),
        eval_batch_size=int(data.eval_batch_size),
        num_workers=int(data.num_workers),
        pipeline=str(data.pipeline),
        image_size=int(data.image_size),
        mean=list(data.mean),
        std=list(data.std),
        eval_crop_pct=float(data.eval_crop_pct),
        num_classes=int(data.num_classes),
        seed=seed,
        compile_views=compile_views,
    )


def checkpoint_dir(cfg: DictConfig) -> Path:
    """Folder of the run's checkpoints."""
    return Path(cfg.output_dir) / "checkpoints"


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Neighbour index, resume state, signal handling, checkpoints, progress, LR monitor.

    Progress is a progress bar on a terminal, and plain lines when standard output is not
    one (a log file: :class:`~nbr_contrast.monitors.progress.PlainProgress`).

    ``last.ckpt`` is written at every epoch end, every ``trainer.checkpoint_every_n_steps``
    steps when set, and on SIGTERM/SIGINT (after the neighbour index has taken the batch's
    entries, so the saved banks match the saved weights). The epoch-end and the step
    cadences are two ``ModelCheckpoint``s: Lightning's one callback with
    ``every_n_train_steps`` saves nothing at an epoch end that is not on the cadence, so the
    last checkpoint of a run would hold an earlier step's state.
    """
    every = int(cfg.trainer.checkpoint_every_n_steps)
    folder = checkpoint_dir(cfg)
    epochs = ModelCheckpoint(
        dirpath=folder,
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        enable_version_counter=False,
        save_last=True,
        save_top_k=1,
    )
    callbacks: list[L.Callback] = [
        NeighbourIndexCallback(**to_container(cfg.search), seed=int(cfg.seed)),
        RunConfigCallback(to_container(cfg)),
        ResumeStateCallback(),
        EpochAveragesCallback(),
        StopOnSignal(),
        epochs,
        LearningRateMonitor(logging_interval="step"),
    ]
    if every:
        steps = ModelCheckpoint(
            dirpath=folder,
            enable_version_counter=False,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every,
            save_on_train_epoch_end=False,
        )
        callbacks.append(steps)
    if cfg.trainer.enable_progress_bar and sys.stdout.isatty():
        callbacks.append(RichProgressBar(refresh_rate=int(cfg.trainer.progress_bar_refresh_rate)))
    elif cfg.trainer.enable_progress_bar:  # a log file: plain lines instead of a bar
        callbacks.append(PlainProgress(int(cfg.trainer.progress_every_n_logs)))
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """CSV and TensorBoard loggers in the run folder (and W&B when asked).

    A resumed run (``resume=true``) continues the folder's CSV file and TensorBoard events
    from the checkpoint's step (:mod:`~nbr_contrast.app.reliability.history`).
    """
    out = Path(cfg.output_dir)
    resumed = resumed_step(str(resolve_checkpoint(cfg))) if cfg.resume else None
    loggers: list[Logger] = []
    if cfg.logger.csv:
        loggers.append(HistoryCSVLogger(out, name="", version="csv", keep_before=resumed))
    if cfg.logger.tensorboard:
        loggers.append(TensorBoardLogger(out, name="", version="tensorboard", purge_step=resumed))
    if cfg.logger.wandb:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(project=cfg.logger.project, save_dir=str(out)))
    return loggers


def resolve_precision(precision: str, accelerator: str) -> str:
    """``trainer.precision``, with ``auto`` made concrete for the hardware the run uses.

    ``auto`` is ``bf16-mixed`` where bf16 matrix work is fast: a CUDA GPU with bf16 support,
    or a CPU with native bf16 instructions, AMX tiles (Intel Sapphire Rapids and later) or
    AVX-512 BF16 (e.g. AMD Zen 4), where oneDNN's bf16 convolutions run at 1.8x (AVX-512
    BF16) to 3x (AMX) the float32 ones on a CIFAR ResNet-18; ``32-true`` everywhere else
    (bf16 emulated on older CPUs is slower than float32).

    Args:
        precision: The configured value (any Lightning precision string, or ``auto``).
        accelerator: ``trainer.accelerator`` (``auto``, ``cpu``, ``gpu``, ``cuda``).

    Returns:
        A Lightning precision string.
    """
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    native_bf16 = any(
        getattr(torch.cpu, probe, lambda: False)()
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    )
    return "bf16-mixed" if native_bf16 else "32-true"


def build_trainer(cfg: DictConfig, **overrides: Any) -> L.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` with the run's callbacks and loggers.

    Checkpoints are written atomically (:class:`~nbr_contrast.app.reliability.AtomicCheckpointIO`).
    """
    t = cfg.trainer
    kwargs: dict[str, Any] = {
        "accelerator": t.accelerator,
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "strategy": t.strategy,
        "precision": resolve_precision(str(t.precision), str(t.accelerator)),
        "max_epochs": t.max_epochs,
        "max_steps": t.max_steps,
        "limit_train_batches": t.limit_train_batches,
        "limit_val_batches": t.limit_val_batches,
        "check_val_every_n_epoch": t.check_val_every_n_epoch,
        "log_every_n_steps": t.log_every_n_steps,
        "accumulate_grad_batches": t.accumulate_grad_batches,
        "gradient_clip_val": t.gradient_clip_val,
        "sync_batchnorm": t.sync_batchnorm,
        "deterministic": t.deterministic,
        "benchmark": t.benchmark,
        "enable_progress_bar": t.enable_progress_bar,
        "default_root_dir": cfg.output_dir,
        "callbacks": build_callbacks(cfg),
        "logger": build_loggers(cfg) or False,
        "num_sanity_val_steps": 0,
        "plugins": [AtomicCheckpointIO()],
    }
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Plain-dict copy of a config (for JSON summaries and checkpoints)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
