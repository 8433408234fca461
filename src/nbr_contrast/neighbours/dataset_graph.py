"""Whole-dataset neighbour structures: a kNN graph and spherical k-means clusters.

CLIM rebuilds these every few epochs from the momentum encoder's embeddings of every
training image (and they are useful to analyse any method): each image's ``k`` nearest other
images, its cluster, and its cosine similarity to that cluster's centroid ("distance" is
``1 - centroid_sim``). The kNN graph is exact, except with a
:class:`~nbr_contrast.neighbours.search.FaissSearch` backend on more than ``ivf_threshold``
images, where an approximate IVF index is used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from nbr_contrast.neighbours.kmeans import spherical_kmeans
from nbr_contrast.neighbours.search import FaissSearch, SearchBackend

QUERY_CHUNK = 4096


def drop_self(sims: Tensor, ids: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Remove each row's own id from ``k + 1`` results (or its last column if absent)."""
    drop = ids == rows[:, None]
    drop[:, -1] |= ~drop.any(dim=1)
    keep = ~drop
    k = ids.shape[1] - 1
    return sims[keep].view(-1, k), ids[keep].view(-1, k)


@dataclass
class DatasetGraph:
    """kNN graph and clusters of every training image's embedding.

    Attributes:
        embeddings: ``[N, D]`` L2-normalised embeddings, in dataset-index order.
        knn_ids: ``[N, k]`` each image's nearest other images, most similar first.
        knn_sims: ``[N, k]`` their cosine similarities.
        labels: ``[N]`` labels (only for monitoring), or ``None``.
        cluster: ``[N]`` cluster of each image, or ``None`` without clustering.
        centroids: ``[C, D]`` normalised centroids, or ``None``.
        centroid_sim: ``[N]`` cosine similarity of each image to its own centroid, or ``None``.
        epoch: Epoch the graph was built at (set by the caller; ``-1``: unknown).
        built_at_step: Optimiser step it was built at (set by the caller; ``-1``: unknown).
    """

    embeddings: Tensor
    knn_ids: Tensor
    knn_sims: Tensor
    labels: Tensor | None = None
    cluster: Tensor | None = None
    centroids: Tensor | None = None
    centroid_sim: Tensor | None = None
    epoch: int = -1
    built_at_step: int = -1

    @classmethod
    def build(
        cls,
        embeddings: Tensor,
        labels: Tensor | None,
        k: int,
        n_clusters: int | None,
        backend: SearchBackend,
        kmeans_iters: int = 20,
        seed: int = 0,
        exclude_self: bool = True,
    ) -> DatasetGraph:
        """Index a dataset's embeddings.

        Args:
            embeddings: ``[N, D]`` embeddings (normalised here).
            labels: ``[N]`` labels for :meth:`neighbour_purity`, or ``None``.
            k: Neighbours per image.
            n_clusters: Spherical k-means clusters, or ``None`` to skip clustering.
            backend: Search backend for the kNN graph; a
                :class:`~nbr_contrast.neighbours.search.FaissSearch` also clusters with FAISS.
            kmeans_iters: k-means iterations.
            seed: k-means seed.
            exclude_self: Leave each image out of its own neighbours.

        Returns:
            The index (``epoch`` left at ``-1`` for the caller to set).
        """
        emb = torch.nn.functional.normalize(embeddings.detach().float(), dim=1)
        n = emb.shape[0]
        if labels is not None and labels.shape != (n,):
            raise ValueError(f"labels must be [{n}], got {list(labels.shape)}.")
        if exclude_self and not 1 <= k <= n - 1:
            raise ValueError(f"k={k} must lie in [1, {n - 1}] (other images in the dataset).")
        wanted = k + 1 if exclude_self else k
        if isinstance(backend, FaissSearch) and n > backend.ivf_threshold:
            faiss_backend, ivf = backend, backend.build_ivf(emb)

            def search(queries: Tensor) -> tuple[Tensor, Tensor]:
                return faiss_backend.search_ivf(ivf, queries, wanted)

        else:

            def search(queries: Tensor) -> tuple[Tensor, Tensor]:
                return backend.topk(queries, emb, wanted)

        all_sims, all_ids = [], []
        for start in range(0, n, QUERY_CHUNK):
            queries = emb[start : start + QUERY_CHUNK]
            sims, ids = search(queries)
            if exclude_self:
                rows = torch.arange(start, start + queries.shape[0], device=ids.device)
                sims, ids = drop_self(sims, ids, rows)
            all_sims.append(sims)
            all_ids.append(ids)
        index = cls(
            embeddings=emb,
            knn_ids=torch.cat(all_ids),
            knn_sims=torch.cat(all_sims),
            labels=None if labels is None else labels.detach().to(emb.device),
        )
        if n_clusters is not None:
            result = spherical_kmeans(
                emb,
                n_clusters,
                iters=kmeans_iters,
                seed=seed,
                backend="faiss" if isinstance(backend, FaissSearch) else "torch",
            )
            index.cluster = result.assignments
            index.centroids = result.centroids
            index.centroid_sim = result.sims_to_centroid
        return index

    @property
    def k(self) -> int:
        """Neighbours per image."""
        return self.knn_ids.shape[1]

    def neighbour_purity(self) -> float | None:
        """Fraction of kNN edges joining images of the same label (``None`` without labels)."""
        if self.labels is None or not bool((self.labels >= 0).any()):
            return None
        known = self.labels >= 0
        same = self.labels[self.knn_ids] == self.labels[:, None]
        return float(same[known].float().mean())

    def to(self, device: str | torch.device) -> DatasetGraph:
        """Move every tensor to ``device``; returns the index."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                setattr(self, f.name, value.to(device))
        return self

    def state_dict(self) -> dict[str, Any]:
        """CPU copies of every field (``None`` for absent ones) and the epoch."""
        state: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            state[f.name] = value.detach().cpu().clone() if isinstance(value, Tensor) else value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this index's contents with a saved :meth:`state_dict` (kept on the CPU).

        Raises:
            ValueError: A field is missing or the shapes do not fit together.
        """
        restored = self.from_state_dict(state)
        for f in fields(self):
            setattr(self, f.name, getattr(restored, f.name))

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> DatasetGraph:
        """A new index from a saved :meth:`state_dict`.

        Raises:
            ValueError: A field is missing or the shapes do not fit together.
        """
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in state]
        if missing:
            raise ValueError(f"Dataset graph state lacks {missing}; saved by another version.")
        index = cls(**{name: state[name] for name in names if name in state})
        n = index.embeddings.shape[0]
        for name in ("knn_ids", "knn_sims", "labels", "cluster", "centroid_sim"):
            value = getattr(index, name)
            if value is not None and value.shape[0] != n:
                raise ValueError(
                    f"Dataset graph state: {name} has {value.shape[0]} rows for {n} images."
                )
        if index.knn_ids.shape != index.knn_sims.shape:
            raise ValueError("Dataset graph state: knn_ids and knn_sims differ in shape.")
        return index
