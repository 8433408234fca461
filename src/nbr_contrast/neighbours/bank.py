"""A streaming FIFO bank of past embeddings with per-entry payloads, and its search.

The bank is the "support set" of NNCLR, the queue of MoCo-style methods (CO2, CLIM), the
candidate set of SNCLR and the labelled queue of CoNe. It is a plain object, not an
``nn.Module``, built from plain arguments, so it drops into any training loop (see
``docs/examples/plain_pytorch.py``: NNCLR in plain PyTorch). In a run, the neighbour index
holds it outside the model so DDP never broadcasts it, and the callback that owns it gathers
entries across ranks before :meth:`NeighbourBank.enqueue` and checkpoints it through
:meth:`NeighbourBank.state_dict`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nbr_contrast.neighbours.search import SearchBackend, TorchSearch, check_k
from nbr_contrast.neighbours.timing import SearchTimer

INITS = ("random", "zeros")
RESERVED = ("embeddings", "ptr", "num_seen", "written_at")


@dataclass(frozen=True)
class PayloadSpec:
    """One extra per-entry field stored beside each embedding.

    Attributes:
        shape: Per-entry shape (``()`` for a scalar such as a label or sample id,
            ``(C,)`` for class probabilities).
        dtype: Storage dtype.
        fill: Initial value of every entry (``-1`` marks "no label/index yet"; ``1/C`` gives
            uniform probabilities).
    """

    shape: tuple[int, ...] = ()
    dtype: torch.dtype = torch.long
    fill: float = -1


@dataclass
class SearchResult:
    """The result of a bank search.

    Attributes:
        sims: ``[B, k]`` float32 cosine similarities, decreasing along each row.
        ids: ``[B, k]`` int64 bank rows.
        embeddings: ``[B, k, D]`` the neighbours' stored embeddings.
        payloads: Every payload of the neighbours, ``[B, k, *shape]`` each.
        written_at: ``[B, k]`` the step at which each neighbour was enqueued (``-1``: an
            entry of the initial fill).
    """

    sims: Tensor
    ids: Tensor
    embeddings: Tensor
    payloads: dict[str, Tensor] = field(default_factory=dict)
    written_at: Tensor | None = None


class NeighbourBank:
    """Fixed-size FIFO of L2-normalised embeddings plus payloads.

    Entries are written at ``ptr`` and wrap around, so the bank always holds the ``size``
    most recent entries. Until ``size`` entries have been written, the filled rows are
    exactly ``[0, num_valid)``.

    The bank needs no trainer, config or process group: search before the optimiser step,
    enqueue after it, and keep :meth:`state_dict` with the model's. Under DDP, gather the
    entries across ranks first (:func:`nbr_contrast.utils.dist.gather_no_grad`) so every rank
    holds the same bank. ``docs/examples/plain_pytorch.py`` trains NNCLR this way::

        bank = NeighbourBank("support", size=65536, dim=256, payloads={"label": PayloadSpec()})
        z1 = F.normalize(projector(backbone(x1)), dim=1)
        found = bank.search(z1.detach(), k=1)  # .embeddings [B, 1, 256], .payloads["label"]
        loss = nnclr_loss(found.embeddings[:, 0], predictor(projector(backbone(x2))), 0.2)
        loss.backward()
        optimizer.step()
        bank.enqueue(z1.detach(), label=labels)  # every declared payload, one row per entry

    Args:
        name: Name used in error messages (the method's key for this bank).
        size: Number of entries ``K``.
        dim: Embedding size ``D``.
        payloads: Extra fields per entry, by name.
        init: ``random``: L2-normalised Gaussian vectors, as the NNCLR paper and solo-learn
            (drawn from a generator seeded by ``torch.initial_seed()`` and the bank's name,
            so ranks seeded alike start with identical banks); ``zeros``: zero vectors.
        backend: Search backend (default:
            :class:`~nbr_contrast.neighbours.search.TorchSearch` in fp32;
            :func:`~nbr_contrast.neighbours.search.search_backend` picks one by name).
        device: Where the tensors live.
    """

    def __init__(
        self,
        name: str,
        size: int,
        dim: int,
        payloads: dict[str, PayloadSpec] | None = None,
        init: str = "random",
        backend: SearchBackend | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if size < 1 or dim < 1:
            raise ValueError(f"Bank {name!r}: size={size} and dim={dim} must be positive.")
        if init not in INITS:
            raise ValueError(f"Bank {name!r}: init={init!r} is unknown; valid: {list(INITS)}.")
        self.name = name
        self.size = size
        self.dim = dim
        self.specs = dict(payloads or {})
        clashes = sorted(set(self.specs) & set(RESERVED))
        if clashes:
            raise ValueError(f"Bank {name!r}: payload names {clashes} are reserved.")
        self.backend = backend if backend is not None else TorchSearch()
        if init == "random":
            seed = (torch.initial_seed() + zlib.crc32(name.encode())) % (2**63)
            gen = torch.Generator().manual_seed(seed)
            emb = torch.nn.functional.normalize(torch.randn(size, dim, generator=gen), dim=1)
        else:
            emb = torch.zeros(size, dim)
        self.embeddings: Tensor = emb.to(device)
        self.payloads: dict[str, Tensor] = {
            key: torch.full((size, *spec.shape), spec.fill, dtype=spec.dtype, device=device)
            for key, spec in self.specs.items()
        }
        self.written_at: Tensor = torch.full((size,), -1, dtype=torch.long, device=device)
        self.ptr = 0
        self.num_seen = 0
        self.num_enqueues = 0
        self.timed = False
        self.timers: list[SearchTimer] = []

    @property
    def device(self) -> torch.device:
        """The device the bank's tensors live on."""
        return self.embeddings.device

    @property
    def is_full(self) -> bool:
        """Whether every entry has been written at least once."""
        return self.num_seen >= self.size

    @property
    def num_valid(self) -> int:
        """Number of entries written so far, at most ``size``."""
        return min(self.num_seen, self.size)

    def __len__(self) -> int:
        return self.size

    def enqueue(self, embeddings: Tensor, step: int | None = None, **payloads: Tensor) -> None:
        """Append a batch (FIFO, wrapping around); the oldest entries are overwritten.

        A batch larger than the bank keeps only its last ``size`` rows, placed where
        writing the whole batch row by row would have left them. Entries are stored detached,
        in the bank's dtype and on its device. Gathering across ranks is the caller's job
        (the callback's in a run).

        Args:
            embeddings: ``[N, D]`` L2-normalised embeddings.
            step: The optimiser step the entries come from (their age is counted from it);
                ``None`` counts this bank's enqueues instead (one per step in a plain loop).
            **payloads: Every declared payload, ``[N, *shape]`` each.

        Raises:
            ValueError: A shape does not match, or a payload is missing or undeclared.
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"Bank {self.name!r}: embeddings must be [N, {self.dim}], "
                f"got {list(embeddings.shape)}."
            )
        n = embeddings.shape[0]
        self.check_payloads(n, payloads)
        if n == 0:
            return
        m = min(n, self.size)
        start = (self.ptr + n - m) % self.size
        self.write(self.embeddings, embeddings[n - m :], start)
        for key, value in payloads.items():
            self.write(self.payloads[key], value[n - m :], start)
        first = min(m, self.size - start)
        written = self.num_enqueues if step is None else int(step)
        self.written_at[start : start + first].fill_(written)
        self.written_at[: m - first].fill_(written)
        self.ptr = (self.ptr + n) % self.size
        self.num_seen += n
        self.num_enqueues += 1

    def check_payloads(self, n: int, payloads: dict[str, Tensor]) -> None:
        """Raise unless ``payloads`` holds exactly the declared fields, ``n`` rows each."""
        missing = sorted(set(self.specs) - set(payloads))
        if missing:
            raise ValueError(f"Bank {self.name!r}: payload {missing[0]!r} is missing from enqueue.")
        unknown = sorted(set(payloads) - set(self.specs))
        if unknown:
            raise ValueError(
                f"Bank {self.name!r}: payload {unknown[0]!r} is not declared; declared: "
                f"{sorted(self.specs)}."
            )
        for key, value in payloads.items():
            expected = (n, *self.specs[key].shape)
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"Bank {self.name!r}: payload {key!r} must have shape {list(expected)} "
                    f"(one row per embedding), got {list(value.shape)}."
                )

    def write(self, store: Tensor, rows: Tensor, start: int) -> None:
        """Copy ``rows`` (at most ``size``) into ``store`` from ``start``, wrapping around."""
        rows = rows.detach().to(device=store.device, dtype=store.dtype)
        first = min(rows.shape[0], self.size - start)
        store[start : start + first] = rows[:first]
        store[: rows.shape[0] - first] = rows[first:]

    @torch.no_grad()
    def search(
        self,
        queries: Tensor,
        k: int,
        exclude_ids: Tensor | None = None,
        only_filled: bool = False,
    ) -> SearchResult:
        """The ``k`` entries most similar to each query, with their embeddings and payloads.

        Args:
            queries: ``[B, D]`` L2-normalised queries (any device; results land there).
            k: Neighbours per query.
            exclude_ids: ``[B]`` sample ids; entries whose ``sample_id`` payload equals
                the query's own id are never returned (exact, however many old copies of
                the sample the bank holds).
            only_filled: Search only the entries written so far (not the initial fill).

        Returns:
            The neighbours, sorted by decreasing similarity.

        Raises:
            ValueError: ``k`` exceeds the searchable entries, or ``exclude_ids`` is given
                for a bank without a ``sample_id`` payload.
        """
        timer = SearchTimer(queries.device) if self.timed else None
        valid = self.num_valid if only_filled else self.size
        if exclude_ids is None:
            sims, ids = self.backend.topk(queries, self.embeddings, k, valid=valid)
        else:
            sims, ids = self.search_excluding(queries, k, exclude_ids, valid)
        bank_ids = ids.to(self.device)
        found = SearchResult(
            sims=sims,
            ids=ids,
            embeddings=self.embeddings[bank_ids].to(queries.device),
            payloads={key: t[bank_ids].to(queries.device) for key, t in self.payloads.items()},
            written_at=self.written_at[bank_ids].to(queries.device),
        )
        if timer is not None:
            self.timers.append(timer.stop())
        return found

    def take_search_ms(self) -> float:
        """Milliseconds spent in the searches timed since the last call (waits for them)."""
        total = sum(timer.elapsed_ms() for timer in self.timers)
        self.timers = []
        return total

    def search_excluding(
        self, queries: Tensor, k: int, exclude_ids: Tensor, valid: int
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` without entries sharing the query's sample id.

        The torch backend (used for every bank on a GPU) masks those entries while scoring,
        on the device; a query whose own copies leave fewer than ``k`` other searchable
        entries gets ``-inf`` similarities for the missing neighbours. FAISS on the CPU
        searches ``k + extra`` candidates, where ``extra`` is the largest number of entries
        any query must skip (counted exactly on the sorted ``sample_id`` payload, on the host),
        masks the skipped ones and keeps the best ``k`` of the rest.
        """
        if "sample_id" not in self.payloads:
            raise ValueError(
                f"Bank {self.name!r}: exclude_ids needs a 'sample_id' payload; declared: "
                f"{sorted(self.payloads)}."
            )
        stored = self.payloads["sample_id"][:valid]
        if exclude_ids.shape != (queries.shape[0],):
            raise ValueError(
                f"Bank {self.name!r}: exclude_ids must be [{queries.shape[0]}] (one sample id "
                f"per query), got {list(exclude_ids.shape)}."
            )
        own = exclude_ids.to(device=stored.device, dtype=stored.dtype)
        if isinstance(self.backend, TorchSearch) or self.device.type == "cuda":
            masked = self.backend if isinstance(self.backend, TorchSearch) else TorchSearch()
            return masked.topk(queries, self.embeddings, k, valid=valid, skip=(stored, own))
        ordered = stored.sort().values
        counts = torch.searchsorted(ordered, own, right=True) - torch.searchsorted(ordered, own)
        extra = int(counts.max()) if counts.numel() else 0
        check_k(k, valid - extra)
        wanted = k + extra
        sims, ids = self.backend.topk(queries, self.embeddings, wanted, valid=valid)
        own_on_q = own.to(ids.device)
        skip = self.payloads["sample_id"][ids.to(self.device)].to(ids.device) == own_on_q[:, None]
        sims, order = sims.masked_fill(skip, float("-inf")).topk(k, dim=1)
        return sims, ids.gather(1, order)

    def own_entries(self, sample_ids: Tensor) -> Tensor:
        """``[B, size]``: which entries carry each query's own sample id (earlier copies).

        The one mask every method excludes a sample's own entries with (``exclude_self``).

        Raises:
            ValueError: For a bank without a ``sample_id`` payload.
        """
        if "sample_id" not in self.payloads:
            raise ValueError(
                f"Bank {self.name!r}: own entries need a 'sample_id' payload; declared: "
                f"{sorted(self.payloads)}."
            )
        own = sample_ids.to(device=self.device, dtype=self.payloads["sample_id"].dtype)
        return (self.payloads["sample_id"][None, :] == own[:, None]).to(sample_ids.device)

    def similarities(self, queries: Tensor) -> Tensor:
        """Similarity of every query to every entry, ``[B, size]`` on the queries' device.

        Not wrapped in ``no_grad``: gradients flow to ``queries`` (entries are detached), as
        CoNe's losses over the whole bank need.
        """
        q = queries.to(device=self.device, dtype=self.embeddings.dtype)
        return (q @ self.embeddings.T).to(queries.device)

    def to(self, device: str | torch.device) -> NeighbourBank:
        """Move every tensor to ``device``; returns the bank."""
        self.embeddings = self.embeddings.to(device)
        self.payloads = {key: t.to(device) for key, t in self.payloads.items()}
        self.written_at = self.written_at.to(device)
        return self

    def state_dict(self) -> dict[str, Tensor | int]:
        """CPU copies of the entries, payloads and steps, plus the write position and counts."""
        state: dict[str, Tensor | int] = {"embeddings": self.embeddings.detach().cpu().clone()}
        for key, t in self.payloads.items():
            state[key] = t.detach().cpu().clone()
        state["written_at"] = self.written_at.cpu().clone()
        state["ptr"] = self.ptr
        state["num_seen"] = self.num_seen
        state["num_enqueues"] = self.num_enqueues
        return state

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        """Restore a :meth:`state_dict`, onto the bank's current device.

        Raises:
            ValueError: The saved bank has another size, dimension or payload layout.
        """
        emb = state.get("embeddings")
        if not isinstance(emb, Tensor) or emb.ndim != 2:
            raise ValueError(f"Bank {self.name!r}: the saved state has no embeddings.")
        if emb.shape[0] != self.size:
            raise ValueError(
                f"Bank {self.name!r}: the checkpoint holds {emb.shape[0]} entries but this bank "
                f"has {self.size}; the queue size changed since it was saved."
            )
        if emb.shape[1] != self.dim:
            raise ValueError(
                f"Bank {self.name!r}: the checkpoint holds {emb.shape[1]}-d embeddings but this "
                f"bank is {self.dim}-d; the embedding dimension changed since it was saved."
            )
        saved_payloads: dict[str, Tensor] = {}
        for key, current in self.payloads.items():
            saved = state.get(key)
            if not isinstance(saved, Tensor):
                raise ValueError(
                    f"Bank {self.name!r}: the checkpoint has no payload {key!r}; the payload "
                    "fields changed since it was saved."
                )
            if saved.shape != current.shape:
                raise ValueError(
                    f"Bank {self.name!r}: payload {key!r} was saved as {list(saved.shape)}, "
                    f"this bank expects {list(current.shape)}; its shape setting changed."
                )
            saved_payloads[key] = saved
        ptr, num_seen = int(state["ptr"]), int(state["num_seen"])
        if not 0 <= ptr < self.size or num_seen < 0:
            raise ValueError(f"Bank {self.name!r}: invalid ptr={ptr} or num_seen={num_seen}.")
        self.embeddings.copy_(emb)
        for key, saved in saved_payloads.items():
            self.payloads[key].copy_(saved)
        written = state.get("written_at")
        if isinstance(written, Tensor):
            self.written_at.copy_(written)
        else:  # a bank saved before 0.2: its entries' ages are unknown
            self.written_at.fill_(-1)
        self.ptr = ptr
        self.num_seen = num_seen
        self.num_enqueues = int(state.get("num_enqueues", 0))
