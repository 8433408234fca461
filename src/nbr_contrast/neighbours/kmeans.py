"""Spherical k-means: clusters of L2-normalised points by cosine similarity.

Two implementations of the same algorithm, both seeded by greedy k-means++ (cosine
distance, a seeded generator): a torch one (cosine assignment in chunks, empty clusters
re-seeded from the points farthest from their centroid) that runs on the points' device,
and FAISS's ``Kmeans(spherical=True)``.
Both end with one exact assignment pass against the final centroids, so ``assignments`` and
``sims_to_centroid`` always agree with ``centroids``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nbr_contrast.neighbours.search import faiss_available, faiss_gpu_available

KMEANS_BACKENDS = ("auto", "torch", "faiss")
ASSIGN_CHUNK = 65536
SEED_POINTS_PER_CLUSTER = 32


@dataclass
class KMeansResult:
    """Clusters of a point set.

    Attributes:
        centroids: ``[C, D]`` L2-normalised centroids.
        assignments: ``[N]`` int64 cluster of each point (the most similar centroid).
        sims_to_centroid: ``[N]`` cosine similarity of each point to its centroid.
    """

    centroids: Tensor
    assignments: Tensor
    sims_to_centroid: Tensor


def assign(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Most similar centroid of each point and that similarity, in chunks of points."""
    sims, ids = [], []
    for start in range(0, x.shape[0], ASSIGN_CHUNK):
        best = (x[start : start + ASSIGN_CHUNK] @ centroids.T).max(dim=1)
        sims.append(best.values)
        ids.append(best.indices)
    return torch.cat(ids), torch.cat(sims)


def draw(weights: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """``n`` indices drawn with probability proportional to ``weights`` (uniform if all zero)."""
    u = torch.rand(n, generator=gen, dtype=torch.float64).to(weights.device)
    cdf = weights.double().cumsum(0)
    if float(cdf[-1]) <= 0:
        cdf = torch.arange(1, weights.numel() + 1, dtype=torch.float64, device=weights.device)
    picks = torch.searchsorted(cdf, u * cdf[-1], right=True)
    return picks.clamp_max(weights.numel() - 1)


def kmeans_plus_plus(x: Tensor, n_clusters: int, gen: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding with cosine distance ``1 - sim``: ``[C, D]`` initial centroids.

    Each step draws ``2 + log C`` candidates with probability proportional to the squared
    distance to the nearest seed so far and keeps the one that lowers the total most (as
    scikit-learn does). Seeds come from a random subsample of ``SEED_POINTS_PER_CLUSTER``
    points per cluster (all points when there are fewer), keeping the ``C`` passes cheap.
    """
    sample = x
    if x.shape[0] > SEED_POINTS_PER_CLUSTER * n_clusters:
        pick = torch.randperm(x.shape[0], generator=gen)[: SEED_POINTS_PER_CLUSTER * n_clusters]
        sample = x[pick.to(x.device)]
    trials = 2 + int(math.log(n_clusters))
    chosen = [int(torch.randint(sample.shape[0], (), generator=gen))]
    best = sample @ sample[chosen[0]]
    for _ in range(1, n_clusters):
        dist = (1.0 - best).clamp_min(0.0)
        candidates = draw(dist * dist, trials, gen)
        merged = torch.maximum(best[None, :], sample[candidates] @ sample.T)
        potential = ((1.0 - merged).clamp_min(0.0) ** 2).sum(dim=1)
        winner = int(potential.argmin())
        chosen.append(int(candidates[winner]))
        best = merged[winner]
    return sample[torch.tensor(chosen, device=x.device)]


def torch_kmeans(x: Tensor, n_clusters: int, iters: int, seed: int) -> Tensor:
    """Lloyd iterations on the sphere; returns the ``[C, D]`` normalised centroids."""
    gen = torch.Generator().manual_seed(seed)
    centroids = kmeans_plus_plus(x, n_clusters, gen)
    previous: Tensor | None = None
    for _ in range(iters):
        labels, sims = assign(x, centroids)
        if previous is not None and torch.equal(labels, previous):
            break
        previous = labels
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=n_clusters)
        centroids = torch.nn.functional.normalize(sums, dim=1)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            farthest = sims.topk(empty.numel(), largest=False).indices
            centroids[empty] = x[farthest]
    return centroids


def faiss_kmeans(x: Tensor, n_clusters: int, iters: int, seed: int) -> Tensor:
    """FAISS spherical k-means; returns the ``[C, D]`` normalised centroids on ``x``'s device.

    Seeded by the same k-means++ as the torch path (FAISS's own random seeding often
    leaves two centroids in one cluster). FAISS trains on at most 256 points per centroid
    (a random subsample beyond that) and splits empty clusters itself; its warning about
    fewer than 39 points per centroid is silenced (small data sets cluster fine).
    """
    import faiss

    data = x.detach().float().cpu().contiguous().numpy()
    km = faiss.Kmeans(
        data.shape[1],
        n_clusters,
        niter=iters,
        seed=seed,
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,
        gpu=bool(x.is_cuda and faiss_gpu_available()),
    )
    init = kmeans_plus_plus(x, n_clusters, torch.Generator().manual_seed(seed))
    km.train(data, init_centroids=init.cpu().numpy())
    centroids = torch.from_numpy(km.centroids).to(x.device)
    return torch.nn.functional.normalize(centroids, dim=1)


def spherical_kmeans(
    x: Tensor, n_clusters: int, iters: int = 20, seed: int = 0, backend: str = "auto"
) -> KMeansResult:
    """Cluster L2-normalised points by cosine similarity.

    Args:
        x: ``[N, D]`` points (normalised again here, in float32).
        n_clusters: Number of clusters ``C`` (``1 <= C <= N``).
        iters: Maximum Lloyd iterations (the torch path stops early once assignments stop
            changing).
        seed: Seed of the initialisation (and of FAISS's subsampling).
        backend: ``auto`` (FAISS when importable, else torch), ``torch`` or ``faiss``.

    Returns:
        Centroids, assignments and each point's similarity to its centroid, on ``x``'s device.

    Raises:
        ValueError: ``n_clusters`` out of range or unknown backend.
        ImportError: ``backend="faiss"`` without FAISS installed.
    """
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"k-means backend={backend!r} is unknown; valid: {list(KMEANS_BACKENDS)}.")
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(
            f"n_clusters={n_clusters} must lie in [1, {n}] (the number of points to cluster)."
        )
    if iters < 1:
        raise ValueError(f"k-means iters={iters} must be at least 1.")
    if backend == "faiss" and not faiss_available():
        raise ImportError(
            "k-means backend='faiss' needs the faiss package: `pip install nbr-contrast[faiss]`."
        )
    x = torch.nn.functional.normalize(x.detach().float(), dim=1)
    use_faiss = backend == "faiss" or (backend == "auto" and faiss_available())
    if use_faiss:
        centroids = faiss_kmeans(x, n_clusters, iters, seed)
    else:
        centroids = torch_kmeans(x, n_clusters, iters, seed)
    assignments, sims = assign(x, centroids)
    return KMeansResult(centroids=centroids, assignments=assignments, sims_to_centroid=sims)
