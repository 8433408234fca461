"""Structured (dataclass) configs: the schema every Hydra config is validated against.

Each config group in ``conf/`` (``method``, ``backbone``, ``data``, ``trainer``, ``optim``,
``search``, ``logger``, ``task``) starts from one of these dataclasses (the data and view
schemas are in :mod:`nbr_contrast.data.config`), so an unknown key or a
value of the wrong type fails at composition time with the key's name. The ``method``
group's schemas are made from the methods' constructors
(:mod:`nbr_contrast.app.method_schemas`); ``nbr_contrast.app.schemas.register_configs``
puts every schema in Hydra's ConfigStore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from nbr_contrast.data.config import DataConfig
from nbr_contrast.methods.optimisation import OptimConfig
from nbr_contrast.models.backbone_config import BackboneConfig


@dataclass
class TrainerConfig:
    """Lightning Trainer settings plus the fast-path switches.

    Attributes:
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        devices: Device count or ``auto``.
        num_nodes: Number of nodes.
        strategy: ``auto``, ``ddp``, ``ddp_spawn``, ...
        precision: Lightning precision string (``32-true``, ``bf16-mixed``, ...) or ``auto``
            (bf16-mixed on bf16-capable GPUs and AMX CPUs, else 32-true).
        max_epochs: Training epochs.
        max_steps: Stop after this many optimiser steps (-1: no limit).
        limit_train_batches: Fraction or count of training batches per epoch.
        limit_val_batches: Fraction or count of validation batches.
        check_val_every_n_epoch: Validation period in epochs.
        log_every_n_steps: Logging period in steps.
        accumulate_grad_batches: Gradient accumulation.
        gradient_clip_val: Gradient norm clip (None: off).
        sync_batchnorm: Convert BatchNorm to SyncBatchNorm under DDP.
        deterministic: Ask torch for deterministic kernels.
        channels_last: Use channels-last memory format.
        compile: ``torch.compile`` the backbone, the heads and the GPU view pipeline.
        enable_progress_bar: Show progress: the rich progress bar on a terminal, plain lines in
            a log file (``progress_every_n_logs``).
        checkpoint_every_n_steps: Also write ``last.ckpt`` every N steps (0: epoch end only).
        benchmark: cuDNN autotuning (``torch.backends.cudnn.benchmark``): picks the fastest
            convolution kernels for fixed input shapes on the first steps.
        compile_mode: ``torch.compile`` mode of the model (``default``, ``reduce-overhead``
            for CUDA graphs, ``max-autotune``).
        progress_bar_refresh_rate: Redraw the progress bar every N steps. Showing a
            progress bar reads the loss back to the host every step; turn it off
            (``enable_progress_bar=false``) for the last per-step wait.
        progress_every_n_logs: When standard output is not a terminal (a log file), a plain
            progress line is written at every epoch's end and, with N > 0, every
            ``N × log_every_n_steps`` steps.
        finite_check_every_n_steps: Read the non-finite loss record every N steps (0: on
            logging steps only). It is also read before every checkpoint and at the end of
            training; 1 gives a diagnostic checkpoint of the failing step's state.
    """

    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = 100
    max_steps: int = -1
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    sync_batchnorm: bool = False
    deterministic: bool = False
    channels_last: bool = False
    compile: bool = False
    enable_progress_bar: bool = True
    checkpoint_every_n_steps: int = 0
    benchmark: bool = False
    compile_mode: str = "default"
    progress_bar_refresh_rate: int = 1
    progress_every_n_logs: int = 0
    finite_check_every_n_steps: int = 0


@dataclass
class SearchConfig:
    """Neighbour search settings shared by every bank and the dataset graph.

    Attributes:
        backend: ``auto`` (FAISS when installed, else torch), ``torch`` or ``faiss``.
        chunk_size: Bank rows scored per chunk by the torch backend (bounds memory).
        half: Score in fp16/bf16 on GPU (exact ranking up to rounding).
        ivf_threshold: FAISS uses an IVF index for dataset graphs larger than this.
        ivf_nprobe: IVF cells visited per query.
        kmeans_iters: Iterations of spherical k-means.
    """

    backend: str = "auto"
    chunk_size: int = 262144
    half: bool = False
    ivf_threshold: int = 2_000_000
    ivf_nprobe: int = 64
    kmeans_iters: int = 20


@dataclass
class LoggerConfig:
    """Experiment loggers. CSV and TensorBoard are on by default; W&B is optional.

    Attributes:
        csv: Write ``metrics.csv``.
        tensorboard: Write TensorBoard event files.
        wandb: Log to Weights & Biases (needs the ``wandb`` package).
        project: W&B project name.
    """

    csv: bool = True
    tensorboard: bool = True
    wandb: bool = False
    project: str = "nbr_contrast"


@dataclass
class TaskConfig:
    """What ``python -m nbr_contrast`` does: ``fit``, ``knn``, ``linear``, ``finetune``, ``export``.

    ``linear`` and ``finetune`` train a new linear head on the backbone of ``ckpt``
    (``nbr_contrast.app.evaluation.head_task``).

    Attributes:
        name: Task name.
        epochs: Training epochs of the head (and, fine-tuning, the backbone).
        lr: Base learning rate for a global batch of 256 (scaled like ``optim.lr``).
        batch_size: Training batch size per device.
        optimizer: ``sgd`` (momentum 0.9) or ``adamw``.
        weight_decay: Weight decay (biases and norm weights are exempt).
        warmup_epochs: Linear warm-up before the per-step cosine decay to zero.
        precompute: ``linear`` only: embed the un-augmented images once and train the head
            on those features (quick; no augmentation).
        layer_decay: ``finetune`` of a ViT: ViT block ``i`` of ``L`` trains at
            ``lr * layer_decay ** (L - i)`` (1 turns it off; other backbones ignore it).
        mixup: ``finetune``: mixup alpha (needs timm; 0 is off).
        cutmix: ``finetune``: cutmix alpha (needs timm; 0 is off).
        label_smoothing: Label smoothing of the cross-entropy.
        k: kNN neighbour counts (several at once).
        temperature: kNN temperatures (several at once; each is reported for every ``k``).
        projector: ``task=export`` also writes the projection head and its recipe.
    """

    name: str = "fit"
    epochs: int = 100
    lr: float = 0.1
    batch_size: int = 256
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    precompute: bool = False
    layer_decay: float = 1.0
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    k: list[int] = field(default_factory=lambda: [20, 200])
    temperature: list[float] = field(default_factory=lambda: [0.07, 0.1])
    projector: bool = False


@dataclass
class RunConfig:
    """The whole run: one node per config group plus run-level settings.

    Attributes:
        seed: Global seed (model init, data order, augmentations).
        ckpt: Checkpoint to evaluate or export, or ``last`` to resume the newest run.
        resume: Resume from the run directory's ``last.ckpt``.
        output_dir: Run directory (Hydra's, set at run time).
        plots: Write neighbour grid, curves and embedding map at the end of a fit.
        knn_report: Report the kNN accuracy of the frozen features before and after a fit
            (one feature pass over the train and test images each; off skips both).
        knn_before: Take the "before" kNN accuracy of a fit (off skips that pass only).
    """

    method: Any = MISSING
    backbone: BackboneConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    optim: OptimConfig = MISSING
    search: SearchConfig = MISSING
    logger: LoggerConfig = MISSING
    task: TaskConfig = MISSING
    seed: int = 42
    ckpt: str | None = None
    resume: bool = False
    output_dir: str = "."
    plots: bool = True
    knn_report: bool = True
    knn_before: bool = True
