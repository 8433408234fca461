"""What a run does: ``fit`` (pretrain), ``knn``, ``linear``, ``finetune`` (evaluate), ``export``.

Every task takes the composed run config and returns a plain dict that is also written as
JSON in the run folder; the CLI and the notebook API call the same functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from nbr_contrast.app.build import (
    build_datamodule,
    build_method,
    build_trainer,
    checkpoint_dir,
    to_container,
)
from nbr_contrast.app.evaluation.data_choice import use_checkpoint_data
from nbr_contrast.app.evaluation.export import export_method
from nbr_contrast.app.evaluation.head_task import train_head
from nbr_contrast.app.evaluation.knn_run import (
    accuracy_table,
    attach_fit_knn,
    knn_backend,
    knn_shards,
    launched_group,
    pair_accuracies,
)
from nbr_contrast.app.evaluation.report import SplitFeatures, write_run_plots
from nbr_contrast.app.preflight import prepare_fit
from nbr_contrast.app.reliability import (
    pretrained_checkpoint,
    resolve_checkpoint,
    resume_command,
    run_folder,
    validate_config,
    validate_neighbour_counts,
    write_resume_note,
)
from nbr_contrast.app.reliability.checkpoint_io import (
    check_kind,
    read_checkpoint,
    stored_run_config,
)
from nbr_contrast.app.reliability.resume import HEAD_TASKS, launch_overrides
from nbr_contrast.app.summaries import neighbour_summary, print_table, write_json
from nbr_contrast.data.datamodule import ViewsDataModule
from nbr_contrast.data.image_source import DataSourceError, ImageSource
from nbr_contrast.methods.base import BaseMethod
from nbr_contrast.monitors.features import extract_features
from nbr_contrast.utils.dist import rank


def eval_device(cfg: DictConfig) -> torch.device:
    """Device for evaluation passes (the first GPU when one is used)."""
    from nbr_contrast.app.build import uses_gpu

    return torch.device("cuda" if uses_gpu(cfg) else "cpu")


def source_features(
    method: BaseMethod,
    datamodule: ViewsDataModule,
    device: torch.device,
    source: ImageSource,
    progress: bool = True,
) -> SplitFeatures:
    """Normalised backbone features of the un-augmented images of ``source``."""
    backbone = method.backbone.to(device)
    loader = datamodule.eval_loader(source)
    return SplitFeatures(*extract_features(backbone, loader, device, True, None, progress))


def split_features(
    method: BaseMethod, datamodule: ViewsDataModule, device: torch.device, progress: bool = True
) -> tuple[SplitFeatures, SplitFeatures | None]:
    """Normalised backbone features of the un-augmented train and test images.

    The test features are ``None`` when the data has no test images (unlabelled training
    images without ``data.eval_root``).
    """
    datamodule.setup("fit")
    backbone = method.backbone.to(device)
    train = extract_features(backbone, datamodule.index_dataloader(), device, True, None, progress)
    test = datamodule.test_source
    if test is None:
        return SplitFeatures(*train), None
    return SplitFeatures(*train), source_features(method, datamodule, device, test, progress)


def knn_of(
    train: SplitFeatures, test: SplitFeatures, ks: list[int], temperature: float, classes: int
) -> dict[int, float]:
    """Cosine kNN accuracy (percent) of test against train features for every k in ``ks``.

    Training features without a label (``-1``) are left out of the bank.
    """
    return pair_accuracies((train, test), ks, [temperature], classes)[temperature]


def say_monitoring(datamodule: ViewsDataModule) -> None:
    """Say in one line what is not monitored when labels or test images are missing."""
    if datamodule.monitored and not datamodule.labelled:
        rank_zero_info(
            "training images have no labels: the online probe and the neighbour agreement are "
            "off; the kNN monitor and report classify the evaluation set's test images against "
            "its labelled reference images."
        )
    elif not datamodule.labelled:
        rank_zero_info(
            "training images have no labels and no labelled evaluation set is configured "
            "(data.eval_root): the probe, kNN monitor, neighbour agreement and kNN report are off."
        )
    elif not datamodule.monitored:
        rank_zero_info(
            "the data has no test images (data.root's test folder, data.val_shards or "
            "data.eval_root): the probe trains but the kNN monitor, validation and kNN "
            "report are off."
        )


def load_method(path: str | Path) -> BaseMethod:
    """Rebuild a method from a checkpoint written by ``task=fit``.

    The method's ``run_config`` attribute is the run config it was trained with (the
    notebook API rebuilds its data from it).

    Raises:
        FileNotFoundError: Naming the ``ckpt`` setting when the file does not exist.
        CheckpointReadError: When it is truncated, corrupt or not such a checkpoint (a
            linear or fine-tuning head's is named as such).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt={path} does not exist. Pass the path of a checkpoint written by a run "
            "(its folder's checkpoints/last.ckpt)."
        )
    ckpt = read_checkpoint(path)
    config = stored_run_config(ckpt)
    assert config is not None  # read_checkpoint refuses a checkpoint without one
    check_kind(config, path, "fit")
    cfg = OmegaConf.create(config)
    if cfg.backbone.get("weights"):
        cfg.backbone.weights = None  # the checkpoint holds the weights; the init file may be gone
    method = build_method(cfg)
    method.load_state_dict(ckpt["state_dict"])
    method.run_config = cfg
    return method


def fit(cfg: DictConfig) -> dict[str, Any]:
    """Pretrain the configured method; report kNN accuracy before and after training.

    ``knn_report=false`` skips the two kNN passes (their accuracies are then ``None``),
    ``knn_before=false`` the first. Every rank takes part in them
    (:mod:`~nbr_contrast.app.evaluation.knn_run`).

    ``resume=true`` continues the run in ``cfg.output_dir`` from its ``last.ckpt``;
    ``ckpt=PATH`` (or ``ckpt=last``, the newest run of the method) starts from a checkpoint
    and writes to a new run folder. ``RESUME.md`` in the run folder gives the command that
    continues this run. The run owns its folder while it runs
    (:mod:`~nbr_contrast.app.reliability.run_lock`).

    Returns:
        The run summary (also written to ``summary.json`` in the run folder).

    Raises:
        ConfigError: For settings that cannot work (see :mod:`nbr_contrast.app.reliability`).
        NonFiniteLossError: When a loss becomes NaN or infinite.
        RunInterrupted: When SIGTERM or SIGINT stopped the run (after saving ``last.ckpt``).
        RunFolderBusyError: When another live run owns ``cfg.output_dir``.
    """
    with run_folder(cfg.output_dir):
        return _fit(cfg)


def _fit(cfg: DictConfig) -> dict[str, Any]:
    parts = prepare_fit(cfg)
    datamodule, method, ckpt = parts.datamodule, parts.method, parts.ckpt
    trainer = build_trainer(cfg, **({} if datamodule.monitored else {"limit_val_batches": 0}))
    say_monitoring(datamodule)
    command = resume_command(cfg)
    if trainer.is_global_zero:
        write_resume_note(cfg)
    device = eval_device(cfg)
    k = int(cfg.method.knn_k)
    progress = bool(cfg.trainer.enable_progress_bar)
    before = ckpt is None and bool(cfg.knn_report) and bool(cfg.knn_before)
    report = attach_fit_knn(cfg, trainer, datamodule, method.backbone, device, before)
    start = time.time()
    trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt)
    elapsed = time.time() - start
    summary: dict[str, Any] = {"method": cfg.method.name, "output_dir": str(cfg.output_dir)}
    after, split = report.after(method.backbone, device) if cfg.knn_report else (None, None)
    if not trainer.is_global_zero:
        return summary
    if cfg.plots:
        train, test = split or split_features(method, datamodule, device, progress)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    last = checkpoint_dir(cfg) / "last.ckpt"
    summary.update(
        {
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "train_seconds": round(elapsed, 1),
            f"knn_acc_before@{k}": report.before,
            f"knn_acc_after@{k}": after,
            "online_knn_acc": metrics.get("val/knn_acc"),
            "linear_probe_acc1": metrics.get("val/probe_acc1"),
            "neighbours": neighbour_summary(metrics),
            "checkpoint": str(last),
            "resumed_from": ckpt,
            "resume": command,
            "logs": str(Path(cfg.output_dir)),
            "config": to_container(cfg),
        }
    )
    if cfg.plots:
        plots = write_run_plots(
            Path(cfg.output_dir),
            trainer,
            train,
            test,
            datamodule.train_source,
            datamodule.test_source,
        )
        summary["plots"] = [str(p) for p in plots]
    write_json(cfg, "summary.json", summary)

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}%"

    print_table(
        f"nbr_contrast · {cfg.method.name} · {trainer.current_epoch} epochs "
        f"in {elapsed / 60:.1f} min",
        [
            ("kNN acc before training", pct(report.before)),
            ("kNN acc after training", pct(after)),
            ("linear probe acc (online)", pct(summary["linear_probe_acc1"])),
            ("checkpoint", str(last)),
            ("logs (CSV, TensorBoard)", str(cfg.output_dir)),
            ("plots", str(Path(cfg.output_dir) / "plots") if cfg.plots else "off"),
            ("resume", command),
        ],
    )
    return summary


def knn(cfg: DictConfig) -> dict[str, Any]:
    """``task=knn ckpt=PATH``: cosine kNN accuracy for several k and temperatures at once.

    Every rank of a ``torchrun`` launch embeds and searches its share; rank 0 reports.
    """
    method = load_method(cfg.ckpt)
    datamodule = build_datamodule(cfg)
    ks = [int(k) for k in cfg.task.k]
    temperatures = [float(t) for t in cfg.task.temperature]
    validate_neighbour_counts("task.k", ks, datamodule.num_train)
    device = eval_device(cfg)
    with launched_group(device):
        pair = knn_shards(method.backbone, datamodule, device)
        if pair is None:
            raise DataSourceError(
                f"task=knn needs labelled images but data={cfg.data.name} has none; set "
                "data.eval_root to a labelled folder with train/ and val/."
            )
        backend = knn_backend(cfg.search, device)
        accs = pair_accuracies(pair, ks, temperatures, datamodule.num_classes, backend, device)
        first = rank() == 0
    result = {
        "task": "knn",
        "ckpt": str(cfg.ckpt),
        "data": cfg.data.name,
        "image_size": int(cfg.data.image_size),
        "k": ks,
        "temperature": temperatures,
        "accuracy": {str(t): {str(k): v for k, v in by_k.items()} for t, by_k in accs.items()},
    }
    if first:
        path = write_json(cfg, "knn.json", result)
        Console().print(accuracy_table(accs))
        print(f"results: {path}")
    return result


def linear(cfg: DictConfig) -> dict[str, Any]:
    """``task=linear ckpt=PATH``: a linear head on the frozen backbone (Lightning, DDP)."""
    return _head(cfg)


def finetune(cfg: DictConfig) -> dict[str, Any]:
    """``task=finetune ckpt=PATH``: the whole network with a new head (Lightning, DDP)."""
    return _head(cfg)


def _head(cfg: DictConfig) -> dict[str, Any]:
    """Train the head of :mod:`~nbr_contrast.app.evaluation.head_task`; report on rank 0."""
    name = str(cfg.task.name)
    with run_folder(cfg.output_dir):
        result = train_head(cfg, load_method(cfg.ckpt))
    if result is None:
        return {"task": name, "output_dir": str(cfg.output_dir)}
    path = write_json(cfg, f"{name}.json", result)
    write_json(cfg, "summary.json", result)
    print_table(
        f"{name} evaluation · {result['epochs']} epochs in {result['train_seconds'] / 60:.1f} min",
        [
            ("top-1", f"{result['top1']:.2f}%"),
            ("top-5", f"{result['top5']:.2f}%"),
            ("checkpoint", result["checkpoint"]),
            ("resume", result["resume"]),
        ],
    )
    print(f"results: {path}")
    return result


def export(cfg: DictConfig) -> dict[str, Any]:
    """``task=export ckpt=PATH``: backbone (``task.projector=true``: projector) and recipes."""
    info = export_method(load_method(cfg.ckpt), cfg.output_dir, bool(cfg.task.projector))
    print("\n".join(f"written: {file}" for file in info["files"]))
    return {"task": "export", "ckpt": str(cfg.ckpt), **info}


def run_task(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """Validate the settings, resolve ``ckpt=last`` for evaluations, dispatch on the task.

    ``knn``, ``linear`` and ``finetune`` evaluate on the data the checkpoint was trained on
    unless the command chose other data
    (:func:`~nbr_contrast.app.evaluation.data_choice.use_checkpoint_data`).

    Args:
        cfg: The run config.
        overrides: The command's overrides (default: the CLI's, none from the notebook API).

    Raises:
        ValueError: For an unknown task or an evaluation without ``ckpt``.
        ConfigError: For settings that cannot work.
    """
    tasks: dict[str, Callable[[DictConfig], dict[str, Any]]] = {
        "fit": fit,
        "knn": knn,
        "linear": linear,
        "finetune": finetune,
        "export": export,
    }
    name = str(cfg.task.name)
    validate_config(cfg)
    if name != "fit":
        if not cfg.ckpt:
            raise ValueError(
                f"task={name} needs a checkpoint: add ckpt=PATH/TO/last.ckpt (or ckpt=last)."
            )
        cfg.ckpt = pretrained_checkpoint(cfg) if name in HEAD_TASKS else resolve_checkpoint(cfg)
    if name in ("knn", *HEAD_TASKS):
        given = overrides if overrides is not None else launch_overrides()
        use_checkpoint_data(cfg, given or [])
    return tasks[name](cfg)
