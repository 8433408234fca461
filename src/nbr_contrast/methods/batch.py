"""The batch contract: what a method's training and validation steps accept.

A training batch is a dict ``{"views": [Tensor [B, 3, s, s], ...], "label": [B], "sample_id":
[B]}`` (``label`` ``-1`` where unknown, ``index`` the sample's position in the training set,
which banks keep beside each entry), or a tuple ``(views, label, index)``; CLIM's batches
also carry ``"neighbour_views"`` and ``"neighbour_id"``. A validation batch is
``{"image", "label"}`` or ``(image, label)``.
:class:`~nbr_contrast.data.datamodule.ViewsDataModule` and
:class:`~nbr_contrast.data.dataset_source.ViewsDataset` make such batches. A method's
:meth:`~nbr_contrast.methods.base.BaseMethod.step` sees a :class:`TrainBatch` and returns a
:class:`StepOutput`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nbr_contrast.data.config import SMALL_IMAGE_MAX
from nbr_contrast.models.backbone_config import BackboneConfig


@dataclass
class StepOutput:
    """What :meth:`~nbr_contrast.methods.base.BaseMethod.step` returns.

    Attributes:
        loss: The method's loss (the probe's loss is added by the base class).
        features: Backbone features of the first view ``[B, F]`` (probe and kNN monitor).
        logs: Scalars to log under ``train/``.
        enqueue: For each bank name, the entries this step adds: ``{"embeddings": [B, D],
            <payload>: [B, ...]}``. The neighbour-index callback enqueues them (gathered
            across ranks for global banks) after the optimiser step.
    """

    loss: Tensor
    features: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)
    enqueue: dict[str, dict[str, Tensor]] = field(default_factory=dict)


@dataclass
class TrainBatch:
    """One training batch as a method sees it.

    Attributes:
        views: One tensor per configured view ``[B, 3, s, s]``.
        labels: Class labels ``[B]`` (only for monitoring, except in supervised methods).
        sample_ids: Each sample's id, its position in the training set ``[B]``.
        neighbour_views: Views of one served neighbour image per sample (CLIM), if any.
        neighbour_ids: The sample ids of those neighbours.
    """

    views: list[Tensor]
    labels: Tensor
    sample_ids: Tensor
    neighbour_views: list[Tensor] | None = None
    neighbour_ids: Tensor | None = None


BATCH_CONTRACT = (
    'a dict {"views": [view tensors], "label": labels, "sample_id": positions in the training '
    "set} or a tuple (views, label, sample_id); wrap your dataset in "
    "nbr_contrast.ViewsDataset(dataset, views) to get one"
)


def train_batch(batch: Any, who: str) -> TrainBatch:
    """The :class:`TrainBatch` of a training batch in the batch contract.

    Raises:
        TypeError: Naming the contract when ``batch`` does not follow it.
    """
    if isinstance(batch, Mapping) and "views" in batch and "sample_id" in batch:
        views = batch["views"]
        labels = batch.get("label")
        if labels is None:
            labels = torch.full_like(batch["sample_id"], -1)
        return TrainBatch(
            views=list(views),
            labels=labels,
            sample_ids=batch["sample_id"],
            neighbour_views=batch.get("neighbour_views"),
            neighbour_ids=batch.get("neighbour_id"),
        )
    if isinstance(batch, Sequence) and len(batch) == 3 and isinstance(batch[0], Sequence):
        return TrainBatch(views=list(batch[0]), labels=batch[1], sample_ids=batch[2])
    shape = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
    raise TypeError(f"{who} got a training batch {shape}; a batch must be {BATCH_CONTRACT}.")


def eval_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """``(images, labels)`` of a validation batch (``{"image", "label"}`` or a pair)."""
    if isinstance(batch, Mapping):
        return batch["image"], batch["label"]
    return batch[0], batch[1]


def check_views(method: Any, views: list[Tensor], spec: BackboneConfig | None) -> None:
    """Refuse views a method cannot train on (checked once, on the first batch).

    Args:
        method: The method (its class name, ``views_needed`` and ``view_recipe``).
        views: The first batch's views.
        spec: The config its backbone was built from (``None``: a module passed in).

    Raises:
        ValueError: For too few views, or images whose size puts them on the other side of
            the small-image stem's limit than the size a name-built backbone was built for.
    """
    name = type(method).__name__
    if len(views) < method.views_needed:
        raise ValueError(
            f"{name} needs {method.views_needed} views per sample but the batch has "
            f"{len(views)}; give the datamodule {method.views_needed} views (e.g. the "
            f"'{method.view_recipe}' recipe)."
        )
    if spec is None or spec.small_stem is not None or spec.image_size is None:
        return
    side = int(views[0].shape[-1])
    if (spec.image_size <= SMALL_IMAGE_MAX) != (side <= SMALL_IMAGE_MAX):
        raise ValueError(
            f"{name}'s backbone {spec.name!r} was built for {spec.image_size} px images but the "
            f"views are {side} px; build it for them: "
            f"backbone=BackboneConfig(name={spec.name!r}, image_size={side})."
        )
