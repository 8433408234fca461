"""Everything a fit checks and builds before its trainer starts.

:func:`prepare_fit` is the first half of ``task=fit``: the settings, the checkpoint to resume,
the data and the method, and what the method's neighbours need of them. A setting that
cannot work fails here, with one line naming it, before a trainer, a logger or a checkpoint
exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
from omegaconf import DictConfig

from nbr_contrast.app.build import build_datamodule, build_method
from nbr_contrast.app.reliability import (
    ConfigError,
    check_resumable,
    resolve_checkpoint,
    validate_config,
    validate_labels,
    validate_neighbour_counts,
)
from nbr_contrast.app.reliability.trainer_checks import requested_devices
from nbr_contrast.data.datamodule import ViewsDataModule
from nbr_contrast.methods.base import BaseMethod


@dataclass
class FitParts:
    """What :func:`prepare_fit` built: the data, the method and the checkpoint to start from."""

    datamodule: ViewsDataModule
    method: BaseMethod
    ckpt: str | None


def prepare_fit(cfg: DictConfig) -> FitParts:
    """Validate a fit's settings and build its data and method (seeded by ``cfg.seed``).

    Raises:
        ConfigError: For the first setting that cannot work.
        DataSourceError: When the data cannot be loaded.
    """
    validate_config(cfg)
    ckpt = resolve_checkpoint(cfg)
    if ckpt is not None:
        check_resumable(cfg, ckpt)
    L.seed_everything(int(cfg.seed), workers=True)
    datamodule = build_datamodule(cfg)
    validate_labels(cfg, datamodule.num_unlabelled)
    method = build_method(cfg)
    if datamodule.monitored:  # no kNN monitor or report without labels: knn_k is unused
        validate_neighbour_counts("method.knn_k", [int(cfg.method.knn_k)], datamodule.num_train)
    check_batch(cfg, datamodule.num_train)
    check_neighbour_needs(method, str(cfg.method.name), datamodule.num_train)
    return FitParts(datamodule, method, ckpt)


def check_neighbour_needs(method: BaseMethod, name: str, num_train: int) -> None:
    """Refuse a bank smaller than the neighbours asked of it, or a graph of too few images.

    Args:
        method: The built method.
        name: Its ``method=`` option (named in the message).
        num_train: Number of training images.

    Raises:
        ConfigError: Naming ``method.<size setting>`` and ``method.k``.
    """
    try:
        specs = method.neighbour_specs()
    except RuntimeError:  # a bank sized by the trainer's epoch: the callback checks it at setup
        specs = []
    for spec in specs:
        if spec.size < spec.k:
            raise ConfigError(
                f"method.{spec.size_setting}={spec.size} is smaller than the method.k={spec.k} "
                f"neighbours method={name} takes from its {spec.name!r} bank; raise "
                f"method.{spec.size_setting} or lower method.k."
            )
    graph = method.dataset_graph_spec()
    if graph is not None and not 1 <= graph.k < num_train:
        raise ConfigError(
            f"method.k={graph.k} must be between 1 and {num_train - 1} (the other training "
            f"images of method={name}'s dataset graph); lower method.k."
        )
    if graph is not None and graph.n_clusters is not None and graph.n_clusters > num_train:
        raise ConfigError(
            f"method.n_clusters={graph.n_clusters} is more than the {num_train} training images "
            f"method={name} clusters; lower method.n_clusters."
        )


def check_batch(cfg: DictConfig, num_train: int) -> None:
    """Refuse a per-device batch larger than a device's share of the training images.

    Raises:
        ConfigError: Naming ``data.batch_size``.
    """
    world = (requested_devices(cfg.trainer.devices) or 1) * int(cfg.trainer.num_nodes)
    share = num_train // world
    if int(cfg.data.batch_size) > share:
        where = "" if world == 1 else f" of each of the {world} devices ({num_train} in all)"
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} is larger than the {share} training "
            f"images{where}, so an epoch would have no batch; lower data.batch_size."
        )
