"""What the neighbours a method retrieves are like: one set of diagnostics for every method.

Every neighbour method (NNCLR, CO2, SNCLR, CLIM, CoNe, MSF) reports these under the same
names (``train/nbr/<name>``), computed on the device from the step's own tensors and read
back on logging steps only:

* ``agreement``: the share of retrieved neighbours whose label is the query's, over the
  queries with a known label (a neighbour without a label disagrees);
* ``self_retrieval``: the share of retrieved neighbours that are an earlier entry of the
  query's own image (the same sample id). A bank that holds more entries than one epoch
  enqueues keeps every image's previous entry, and a method that does not exclude it
  (``exclude_self``) can retrieve the image itself;
* ``age_mean`` and ``age_max``: optimiser steps since the retrieved entries were enqueued
  (entries never written are left out);
* ``top1_sim``: the mean cosine similarity of each query's nearest neighbour;
* ``positive_sim``: the mean cosine similarity of the positive pair (the two views'
  embeddings of the same image);
* ``spread``: how far the embeddings are spread over the unit sphere, :func:`spread`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

QUALITY = ("agreement", "self_retrieval", "age_mean", "age_max", "top1_sim", "positive_sim")
"""The names :func:`neighbour_quality` reports (``spread`` is reported by every method)."""
LABELLED = frozenset({"agreement"})
"""The names that compare labels (left out when the training images have none)."""


def spread(embeddings: Tensor) -> Tensor:
    """The collapse indicator: per-dimension spread of normalised embeddings, ``[0, ~1]``.

    ``mean_d std(ẑ_d) · √d`` over the batch, where ``ẑ = z / ‖z‖``: embeddings spread
    uniformly over the unit sphere of ``d`` dimensions have a standard deviation of
    ``1/√d`` in every dimension, so the indicator is about 1 for them and 0 when every
    embedding is the same point. It falls well below 1 when the embeddings crowd into a
    small cap or a few dimensions.

    Args:
        embeddings: ``[B, d]`` (any scale: each row is normalised here), ``B >= 2``.

    Returns:
        A scalar tensor.
    """
    z = F.normalize(embeddings.detach().float(), dim=1)
    return z.std(dim=0, unbiased=False).mean() * math.sqrt(z.shape[1])


def neighbour_quality(
    labels: Tensor,
    sample_ids: Tensor,
    neighbour_labels: Tensor,
    neighbour_ids: Tensor,
    neighbour_steps: Tensor | None = None,
    step: int = 0,
    top1_sims: Tensor | None = None,
    positive_sims: Tensor | None = None,
) -> dict[str, Tensor]:
    """The diagnostics of one step's neighbours (the module docstring defines each).

    Args:
        labels: The queries' labels ``[B]`` (``-1``: unknown).
        sample_ids: The queries' sample ids ``[B]``.
        neighbour_labels: Their neighbours' labels ``[B]`` or ``[B, k]``.
        neighbour_ids: Their neighbours' sample ids ``[B]`` or ``[B, k]``.
        neighbour_steps: The steps at which the neighbours were enqueued (``-1``: never);
            ``None`` leaves out the ages.
        step: The current optimiser step.
        top1_sims: Each query's similarity to its nearest neighbour ``[B]`` (or ``None``).
        positive_sims: Each positive pair's similarity ``[B]`` (or ``None``).

    Returns:
        Scalar tensors by name, on the queries' device; nothing is read back to the host.
    """
    with torch.no_grad():
        nb_labels = neighbour_labels.reshape(labels.shape[0], -1)
        nb_ids = neighbour_ids.reshape(labels.shape[0], -1)
        known = (labels >= 0)[:, None].expand_as(nb_labels)
        agree = (nb_labels == labels[:, None]) & known
        out = {
            "agreement": agree.float().sum() / known.float().sum().clamp_min(1.0),
            "self_retrieval": (nb_ids == sample_ids[:, None]).float().mean(),
        }
        if neighbour_steps is not None:
            written = neighbour_steps.reshape(nb_ids.shape)
            valid = written >= 0
            age = (step - written).float() * valid
            out["age_mean"] = age.sum() / valid.float().sum().clamp_min(1.0)
            out["age_max"] = age.max()
        if top1_sims is not None:
            out["top1_sim"] = top1_sims.detach().float().mean()
        if positive_sims is not None:
            out["positive_sim"] = positive_sims.detach().float().mean()
    return out
