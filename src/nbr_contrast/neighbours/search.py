"""Exact cosine top-k search behind one interface: a plain torch backend and a FAISS backend.

Every backend answers the same question — the ``k`` keys with the highest inner product with
each query (inputs are L2-normalised by the caller, so this is cosine similarity) — and
returns the same neighbours on the same data up to floating-point ties. Results are sorted by
decreasing similarity and land on the queries' device.

* :class:`TorchSearch` scores keys chunk by chunk with ``matmul`` + ``topk`` on the keys'
  device and merges the partial top-k, so memory stays bounded by the chunk size. It needs
  nothing beyond torch.
* :class:`FaissSearch` runs FAISS's flat inner-product search: on the CPU for CPU tensors, on
  the GPU for CUDA tensors when a working faiss-gpu is installed (detected at run time),
  otherwise on the CPU after a copy. It can also build an approximate IVF index for large
  static key sets (see :meth:`FaissSearch.build_ivf`).

Backends are plain objects built from plain arguments and need no run config, trainer or
process group; :func:`search_backend` picks one by name (``backend`` of
:class:`~nbr_contrast.neighbours.callback.NeighbourIndexCallback`, ``search.backend`` on the
command line)::

    backend = search_backend("auto", device="cuda")  # FAISS GPU if it works, else torch
    sims, ids = TorchSearch(chunk_size=65536).topk(queries, keys, k=5)
"""

from __future__ import annotations

import importlib.util
import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

BACKENDS = ("auto", "torch", "faiss")


def faiss_available() -> bool:
    """Whether the ``faiss`` package can be imported."""
    return importlib.util.find_spec("faiss") is not None


def faiss_gpu_available() -> bool:
    """Whether FAISS has working GPU support: GPU functions compiled in and a GPU visible."""
    if not faiss_available():
        return False
    import faiss

    has_functions = hasattr(faiss, "StandardGpuResources") and hasattr(faiss, "knn_gpu")
    return has_functions and faiss.get_num_gpus() > 0


SkipRule = tuple[Tensor, Tensor]
"""``(key_ids, query_ids)``: keys that a query must skip, matched by id (see TorchSearch)."""


def check_k(k: int, searchable: int) -> None:
    """Raise a ``ValueError`` naming ``k`` unless ``1 <= k <= searchable``.

    Args:
        k: Requested number of neighbours.
        searchable: Number of keys that can be returned.
    """
    if k < 1:
        raise ValueError(f"k={k} must be at least 1.")
    if k > searchable:
        raise ValueError(
            f"k={k} exceeds the {searchable} searchable keys (bank smaller than k); "
            "lower k or enlarge the bank."
        )


class SearchBackend(ABC):
    """Exact inner-product top-k search."""

    @abstractmethod
    def topk(
        self, queries: Tensor, keys: Tensor, k: int, valid: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return the ``k`` keys most similar to each query.

        Args:
            queries: ``[B, D]`` L2-normalised queries.
            keys: ``[K, D]`` L2-normalised keys.
            k: Neighbours per query.
            valid: Search only the first ``valid`` rows of ``keys`` (``None``: all).

        Returns:
            ``(sims, ids)``: float32 ``[B, k]`` similarities sorted in decreasing order and
            int64 ``[B, k]`` row indices into ``keys``, both on the queries' device.

        Raises:
            ValueError: ``k`` exceeds the number of searchable keys.
        """


def searchable_keys(keys: Tensor, valid: int | None) -> Tensor:
    """The rows of ``keys`` a search may return: all, or the first ``valid``."""
    if valid is None:
        return keys
    if not 0 <= valid <= keys.shape[0]:
        raise ValueError(f"valid={valid} must lie in [0, {keys.shape[0]}].")
    return keys[:valid]


class TorchSearch(SearchBackend):
    """``matmul`` + ``topk`` on the keys' device, in chunks of keys.

    Args:
        chunk_size: Keys scored per chunk; peak extra memory is ``B x chunk_size`` scores.
        half: Score in fp16 on CUDA (bf16 on the CPU). The ranking is exact up to rounding
            of near-equal scores; returned similarities are cast back to float32.
    """

    def __init__(self, chunk_size: int = 262144, half: bool = False) -> None:
        if chunk_size < 1:
            raise ValueError(f"index.chunk_size={chunk_size} must be positive.")
        self.chunk_size = chunk_size
        self.half = half

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype scores are computed in on ``device``."""
        if not self.half:
            return torch.float32
        return torch.float16 if device.type == "cuda" else torch.bfloat16

    def chunk_topk(
        self, q: Tensor, keys: Tensor, start: int, k: int, skip: SkipRule | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` (or fewer, for a short last chunk) of the chunk of keys at ``start``."""
        chunk = keys[start : start + self.chunk_size].to(q.dtype)
        scores = q @ chunk.T
        if skip is not None:
            key_ids, query_ids = skip
            own = key_ids[start : start + chunk.shape[0]][None, :] == query_ids[:, None]
            scores = scores.masked_fill(own, float("-inf"))
        sims, ids = scores.topk(min(k, chunk.shape[0]), dim=1)
        return sims, ids + start

    def topk(
        self,
        queries: Tensor,
        keys: Tensor,
        k: int,
        valid: int | None = None,
        skip: SkipRule | None = None,
    ) -> tuple[Tensor, Tensor]:
        """See :meth:`SearchBackend.topk`.

        Args:
            queries: ``[B, D]`` queries.
            keys: ``[N, D]`` keys.
            k: Neighbours per query.
            valid: Search only the first ``valid`` keys.
            skip: ``(key_ids [N], query_ids [B])``: key ``j`` is never a neighbour of query
                ``i`` when ``key_ids[j] == query_ids[i]`` (its score is ``-inf``), decided
                on the device without reading anything back.
        """
        keys = searchable_keys(keys, valid)
        check_k(k, keys.shape[0])
        dtype = self.compute_dtype(keys.device)
        q = queries.detach().to(device=keys.device, dtype=dtype)
        if skip is not None:
            skip = (skip[0].to(keys.device), skip[1].to(device=keys.device, dtype=skip[0].dtype))
        best_sims, best_ids = self.chunk_topk(q, keys, 0, k, skip)
        for start in range(self.chunk_size, keys.shape[0], self.chunk_size):
            sims, ids = self.chunk_topk(q, keys, start, k, skip)
            merged = torch.cat([best_sims, sims], dim=1)
            sims, order = merged.topk(min(k, merged.shape[1]), dim=1)
            best_ids = torch.cat([best_ids, ids], dim=1).gather(1, order)
            best_sims = sims
        return best_sims.float().to(queries.device), best_ids.to(queries.device)


class FaissSearch(SearchBackend):
    """FAISS flat inner-product search (exact), on the GPU when faiss-gpu can run there.

    Args:
        ivf_threshold: Dataset indices with more keys than this use an IVF index
            (:meth:`build_ivf`); :meth:`topk` is always exact.
        nprobe: IVF cells visited per query.
    """

    def __init__(self, ivf_threshold: int = 2_000_000, nprobe: int = 64) -> None:
        if not faiss_available():
            raise ImportError(missing_faiss_message())
        self.ivf_threshold = ivf_threshold
        self.nprobe = nprobe
        self._gpu_resources: Any = None

    def gpu_resources(self) -> Any:
        """FAISS GPU resources, created once on first use."""
        import faiss

        if self._gpu_resources is None:
            self._gpu_resources = faiss.StandardGpuResources()
        return self._gpu_resources

    def topk(
        self, queries: Tensor, keys: Tensor, k: int, valid: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """See :meth:`SearchBackend.topk`."""
        import faiss

        keys = searchable_keys(keys, valid)
        check_k(k, keys.shape[0])
        if keys.is_cuda and faiss_gpu_available():
            import faiss.contrib.torch_utils  # lets faiss.knn_gpu take CUDA tensors

            q = queries.detach().to(device=keys.device, dtype=torch.float32).contiguous()
            x = keys.detach().float().contiguous()
            sims, ids = faiss.knn_gpu(
                self.gpu_resources(), q, x, k, metric=faiss.METRIC_INNER_PRODUCT
            )
            return sims.to(queries.device), ids.long().to(queries.device)
        q_np = queries.detach().float().cpu().contiguous().numpy()
        x_np = keys.detach().float().cpu().contiguous().numpy()
        sims_np, ids_np = faiss.knn(q_np, x_np, k, metric=faiss.METRIC_INNER_PRODUCT)
        return (
            torch.from_numpy(sims_np).to(queries.device),
            torch.from_numpy(ids_np).long().to(queries.device),
        )

    def build_ivf(self, keys: Tensor) -> Any:
        """Build an *approximate* IVF-flat inner-product index over a static key set.

        ``nlist = 4·sqrt(K)`` cells (at most ``K / 39``, FAISS's minimum training points per
        cell), trained on the keys themselves; a query visits ``nprobe`` cells, so a true
        neighbour in an unvisited cell is missed. With ``nprobe >= nlist`` the search is
        exact. Used by the dataset graph when ``K > ivf_threshold``.

        Args:
            keys: ``[K, D]`` L2-normalised keys.

        Returns:
            A trained and filled ``faiss.IndexIVFFlat`` (on the CPU).
        """
        import faiss

        x = keys.detach().float().cpu().contiguous().numpy()
        n, d = x.shape
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.add(x)
        index.nprobe = min(self.nprobe, nlist)
        return index

    def search_ivf(self, index: Any, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Search an index from :meth:`build_ivf`; same return contract as :meth:`topk`.

        Raises:
            ValueError: ``k`` exceeds the indexed keys.
            RuntimeError: The visited cells held fewer than ``k`` keys (raise ``nprobe``).
        """
        check_k(k, index.ntotal)
        q = queries.detach().float().cpu().contiguous().numpy()
        sims, ids = index.search(q, k)
        if (ids < 0).any():
            raise RuntimeError(
                f"The IVF search found fewer than k={k} keys in {index.nprobe} cells; "
                "raise index.ivf_nprobe."
            )
        return (
            torch.from_numpy(sims).to(queries.device),
            torch.from_numpy(ids).long().to(queries.device),
        )


def missing_faiss_message() -> str:
    """The error text for the FAISS backend without FAISS installed."""
    return (
        "search.backend=faiss (the callback's backend='faiss') needs the faiss package, which "
        "is not installed: run `pip install nbr-contrast[faiss]` (or faiss-gpu), or use the "
        "torch backend (search.backend=torch)."
    )


def search_backend(
    name: str = "auto",
    device: torch.device | str = "cpu",
    chunk_size: int = 262144,
    half: bool = False,
    ivf_threshold: int = 2_000_000,
    nprobe: int = 64,
) -> SearchBackend:
    """Build the search backend called ``name`` for banks living on ``device``.

    ``auto`` searches where the bank lives: FAISS for CPU banks when it is installed, FAISS
    GPU for CUDA banks when a working faiss-gpu is installed, and torch otherwise (a CUDA
    bank is never copied to the CPU to be searched).

    Args:
        name: ``auto``, ``torch`` or ``faiss``.
        device: Where the banks will live.
        chunk_size: Keys scored per chunk by :class:`TorchSearch`.
        half: Score in half precision in :class:`TorchSearch`.
        ivf_threshold: Key count above which :class:`FaissSearch` builds IVF indices (graphs).
        nprobe: IVF cells visited per query by :class:`FaissSearch`.

    Returns:
        The backend.

    Raises:
        ImportError: ``faiss`` was asked for and is not installed.
        ValueError: Unknown backend name.
    """
    if name not in BACKENDS:
        raise ValueError(f"search.backend={name!r} is unknown; valid values: {list(BACKENDS)}.")
    if name == "faiss" and not faiss_available():
        raise ImportError(missing_faiss_message())
    on_cuda = torch.device(device).type == "cuda"
    faiss_fits = faiss_gpu_available() if on_cuda else faiss_available()
    if name == "faiss" or (name == "auto" and faiss_fits):
        return FaissSearch(ivf_threshold=ivf_threshold, nprobe=nprobe)
    return TorchSearch(chunk_size=chunk_size, half=half)
