"""CLIM: centre-wise local image mixture, on the MoCo v2 base.

Li, Xiong, Zhang. "Center-wise Local Image Mixture For Contrastive Representation
Learning", BMVC 2021 (arXiv 2011.02697).

Every ``refresh_every`` epochs after ``warmup_epochs`` the whole-dataset graph embeds the
training set with the momentum encoder, clusters it (spherical k-means) and builds the
kNN graph. Centre-wise selection keeps, for image ``i``, the kNN ``j`` in ``i``'s own
cluster that are closer to the centroid than ``i`` (fallback: ``i`` itself). The data
pipeline serves one selected neighbour image per anchor, drawn per step; the query is
the CutMix (or mixup) of anchor and neighbour with ``λ ~ Beta(α, α)``, area-corrected::

    L_mix = λ·InfoNCE(x̃; k_anchor) + (1-λ)·InfoNCE(x̃; k_neighbour)     (queue negatives)
    L     = L_MoCo v2 + L_mix + mean_s InfoNCE(q_s; k)                  (multi-resolution)

Multi-resolution views are the data config's views after the first two (same scale
range, smaller output sizes); each is contrasted with the full-size key of view 2.

Deviations: cluster count (default 10x classes on CIFAR), α = 2 and the kNN graph size
are unconfirmed in the paper and are config options; mixing starts only after the first
index build (``warmup_epochs``), since clustering a random network is meaningless.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from nbr_contrast.data.protocols import NeighbourServing, require
from nbr_contrast.losses import clim_mix_loss, cutmix, mixup, moco_infonce
from nbr_contrast.methods.batch import StepOutput, TrainBatch
from nbr_contrast.methods.co2 import CO2
from nbr_contrast.methods.hyperparameters import (
    ArgumentError,
    check_at_least,
    check_hyperparameters,
)
from nbr_contrast.monitors.neighbour_quality import neighbour_quality
from nbr_contrast.neighbours.dataset_graph import DatasetGraph
from nbr_contrast.neighbours.index import DatasetGraphSpec

MIXERS = ("cutmix", "mixup")


def centre_wise_selection(index: DatasetGraph) -> tuple[Tensor, Tensor]:
    """Neighbours of each image in its own cluster that lie closer to the centroid.

    Args:
        index: A dataset graph: a kNN graph and clusters.

    Returns:
        ``table [N, k]`` of selected sample ids padded with -1 (row ``i`` holds ``i``
        itself when nothing is selected) and ``counts [N]`` of real selections (0 for the
        fallback rows).
    """
    ids = index.knn_ids
    cluster = index.cluster
    closeness = index.centroid_sim
    same_cluster = cluster[ids] == cluster[:, None]
    closer = closeness[ids] > closeness[:, None]
    keep = same_cluster & closer
    counts = keep.sum(dim=1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    table = torch.where(
        torch.gather(keep, 1, order), torch.gather(ids, 1, order), torch.full_like(ids, -1)
    )
    fallback = counts == 0
    table[fallback, 0] = torch.arange(len(ids), device=ids.device)[fallback]
    return table, counts


class CLIM(CO2):
    """CLIM as a LightningModule (MoCo v2 + mixture loss + multi-resolution queries).

    Every MoCo v2 argument is :class:`~nbr_contrast.methods.co2.CO2`'s (``alpha`` 0: no
    consistency term); the mixture's (``conf/method/clim.yaml``) are its own.

    Args:
        n_clusters: Spherical k-means clusters (``None``: 10x ``num_classes``, 100 without).
        k: Neighbours per image in the kNN graph.
        refresh_every: Index rebuild period in epochs (5).
        warmup_epochs: First epoch with an index and mixing (10).
        mixer: ``cutmix`` (default) or ``mixup``.
        mix_alpha: ``α`` of ``λ ~ Beta(α, α)`` (2, unconfirmed).
        alpha: CO2's consistency weight (0: MoCo v2's loss).
        **kwargs: :class:`~nbr_contrast.methods.co2.CO2`'s arguments.
    """

    view_recipe: ClassVar[str] = "clim"

    def __init__(
        self,
        *,
        n_clusters: int | None = None,
        k: int = 10,
        refresh_every: int = 5,
        warmup_epochs: int = 10,
        mixer: str = "cutmix",
        mix_alpha: float = 2.0,
        alpha: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(alpha=alpha, **kwargs)
        name = type(self).__name__
        check_hyperparameters(
            name,
            n_clusters=n_clusters,
            warmup_epochs=warmup_epochs,
            mix_alpha=mix_alpha,
        )
        check_at_least(name, "k", k, 1, "a kNN graph needs neighbours")
        check_at_least(name, "refresh_every", refresh_every, 1, "a period in epochs")
        if n_clusters is not None:
            check_at_least(name, "n_clusters", n_clusters, 1, "or null for the default")
        if not mix_alpha > 0:
            raise ArgumentError(name, "mix_alpha", mix_alpha, "must be > 0")
        if mixer not in MIXERS:
            raise ArgumentError(name, "mixer", mixer, f"must be one of {', '.join(MIXERS)}")
        self.n_clusters = None if n_clusters is None else int(n_clusters)
        self.k = int(k)
        self.refresh_every = int(refresh_every)
        self.warmup_epochs = int(warmup_epochs)
        self.mixer = str(mixer)
        self.mix_alpha = float(mix_alpha)
        self.selection_stats: dict[str, float] = {}

    def dataset_graph_spec(self) -> DatasetGraphSpec:
        """KNN graph and clusters of the momentum embeddings, rebuilt on schedule."""
        n_clusters = self.n_clusters or 10 * (self.num_classes or 10)
        return DatasetGraphSpec(
            k=self.k,
            n_clusters=int(n_clusters),
            refresh_every=self.refresh_every,
            warmup_epochs=self.warmup_epochs,
        )

    def setup(self, stage: str) -> None:
        """Ask the data pipeline for neighbour images (before its loader starts)."""
        super().setup(stage)
        if stage == "fit":
            datamodule = require(
                self.trainer.datamodule, NeighbourServing, "CLIM", "its mixtures of neighbours"
            )
            datamodule.enable_neighbour_serving(self.k)

    def on_train_epoch_start(self) -> None:
        """After an index build (or a resume), hand the selection to the data pipeline."""
        super().on_train_epoch_start()
        index = self.neighbours.dataset_graph if self.neighbours else None
        datamodule = self.trainer.datamodule
        if index is None:
            return
        if index.epoch != self.current_epoch and datamodule.serving_neighbours:
            return
        table, counts = centre_wise_selection(index)
        datamodule.set_neighbour_table(table.cpu(), counts.cpu())
        sizes = torch.bincount(index.cluster, minlength=index.centroids.shape[0])
        nonempty = sizes[sizes > 0].float()
        picked = table[counts > 0]
        labels = index.labels
        purity = float("nan")
        if labels is not None and len(picked):
            own = labels[counts > 0][:, None].expand_as(picked)
            valid = (picked >= 0) & (own >= 0)
            purity = float((labels[picked.clamp_min(0)] == own)[valid].float().mean())
        self.selection_stats = {
            "clusters": float(len(nonempty)),
            "cluster_size_min": float(nonempty.min()),
            "cluster_size_max": float(nonempty.max()),
            "selected_fraction": float((counts > 0).float().mean()),
            "selected_purity": purity,
        }
        self.log_dict(
            {f"clim/{k}": v for k, v in self.selection_stats.items()},
            on_step=False,
            on_epoch=True,
        )

    def mix(self, anchor: Tensor, neighbour: Tensor) -> tuple[Tensor, Tensor]:
        """CutMix or mixup with per-sample ``λ ~ Beta(α, α)`` (area-corrected for CutMix)."""
        concentration = torch.full((), self.mix_alpha, device=anchor.device)
        # drawn on the device, without argument checks (each would read the device back)
        beta = torch.distributions.Beta(concentration, concentration, validate_args=False)
        lam = beta.sample((anchor.shape[0],))
        if self.mixer == "cutmix":
            return cutmix(anchor, neighbour, lam)
        return mixup(anchor, neighbour, lam)

    def queue_logs(self, q: Tensor, k: Tensor, labels: Tensor, ids: Tensor) -> dict[str, Tensor]:
        """The spread and positive pair only: CLIM's neighbours are the served images."""
        positive = (q.detach() * k).sum(dim=1)
        return self.neighbour_logs(labels, ids, q.detach(), positive_sims=positive)

    def served_logs(self, labels: Tensor, ids: Tensor, neighbour_ids: Tensor) -> dict[str, Tensor]:
        """Diagnostics of the served neighbour images (logging steps only)."""
        graph = self.neighbours.dataset_graph if self.neighbours is not None else None
        if not self.logging_step or graph is None:
            return {}
        graph_labels = graph.labels.to(labels.device) if graph.labels is not None else None
        nb_labels = (
            graph_labels[neighbour_ids] if graph_labels is not None else torch.full_like(ids, -1)
        )
        built = torch.full_like(ids, graph.built_at_step)
        quality = neighbour_quality(labels, ids, nb_labels, neighbour_ids, built, self.global_step)
        return {f"nbr/{k}": v for k, v in quality.items()}

    def step(self, batch: TrainBatch) -> StepOutput:
        """MoCo v2 loss, plus multi-resolution queries and the local mixture loss."""
        views, labels = batch.views, batch.labels
        out = super().step(batch)
        queue = self.bank("queue").embeddings.clone()
        own = self.own_entries(batch.sample_ids)
        tau = self.temperature
        k2 = out.enqueue["queue"]["embeddings"][labels.shape[0] :]
        loss = out.loss
        small = views[2:]
        if small:
            l_multi = torch.stack(
                [moco_infonce(self.query(v), k2, queue, tau, own) for v in small]
            ).mean()
            loss = loss + l_multi
            out.logs["l_multires"] = l_multi.detach()
        if batch.neighbour_views is not None:
            mixed, lam = self.mix(views[0], batch.neighbour_views[0])
            k_nb = self.keys(batch.neighbour_views[1])
            l_mix = clim_mix_loss(self.query(mixed), k2, k_nb, lam, queue, tau)
            loss = loss + l_mix
            out.logs["l_mix"] = l_mix.detach()
            out.logs["mix_lambda"] = lam.mean()
            if batch.neighbour_ids is not None:
                out.logs |= self.served_logs(labels, batch.sample_ids, batch.neighbour_ids)
        out.loss = loss
        return out

    def query(self, x: Tensor) -> Tensor:
        """``norm(g(f(x)))`` of the online encoder."""
        return F.normalize(self.projector(self.features(x)), dim=1)
