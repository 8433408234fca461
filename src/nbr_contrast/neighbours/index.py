"""The neighbour index: every bank and the whole-dataset graph of one run, in one place.

A method *declares* what it needs (:class:`BankSpec`, :class:`DatasetGraphSpec`); the
:class:`~nbr_contrast.neighbours.callback.NeighbourIndexCallback` builds a
:class:`NeighbourIndex` from those declarations, hands the method a read handle, writes to
it after each step and saves it in checkpoints. The index is a plain object, not an
``nn.Module``, so DDP never broadcasts it and ``load_state_dict`` of the model never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from nbr_contrast.neighbours.bank import NeighbourBank, PayloadSpec
from nbr_contrast.neighbours.dataset_graph import DatasetGraph
from nbr_contrast.neighbours.search import SearchBackend

SCOPES = ("global", "rank")


@dataclass(frozen=True)
class BankSpec:
    """A streaming FIFO bank a method asks for.

    Attributes:
        name: Key the method uses to read it and to return entries to enqueue.
        size: Number of entries (``K``).
        dim: Embedding size.
        payloads: Extra per-entry fields (labels, sample ids, probabilities, ...).
        scope: ``global`` (every rank enqueues the gathered batch, so all ranks hold the
            same bank) or ``rank`` (each rank keeps its own entries).
        init: ``random`` (normalised Gaussian entries, as NNCLR and MoCo) or ``zeros``.
        k: The largest number of neighbours the method will request (checked against
            ``size`` when the index is built).
        size_setting: The argument that sets ``size`` (named in error messages).
        exclude_self: Whether the method never uses a sample's own earlier entries (said in
            the line the callback writes when the bank can hold them).
    """

    name: str
    size: int
    dim: int
    payloads: dict[str, PayloadSpec] = field(default_factory=dict)
    scope: str = "global"
    init: str = "random"
    k: int = 1
    size_setting: str = "queue_size"
    exclude_self: bool = False


@dataclass(frozen=True)
class DatasetGraphSpec:
    """A whole-dataset graph a method asks for (rebuilt on a schedule).

    Attributes:
        k: Neighbours per image in the kNN graph.
        n_clusters: Spherical k-means clusters (``None``: no clustering).
        refresh_every: Rebuild period in epochs.
        warmup_epochs: First epoch at which the index is built.
    """

    k: int
    n_clusters: int | None
    refresh_every: int = 5
    warmup_epochs: int = 0


def validate_bank_spec(spec: BankSpec) -> None:
    """Raise one clear error for a bank that cannot work as configured."""
    if spec.scope not in SCOPES:
        raise ValueError(f"Bank {spec.name!r}: scope={spec.scope!r}; valid: {SCOPES}.")
    if spec.size <= 0:
        raise ValueError(f"{spec.size_setting}={spec.size} must be positive.")
    if spec.size < spec.k:
        raise ValueError(
            f"{spec.size_setting}={spec.size} is smaller than the {spec.k} neighbours the "
            f"method requests from bank {spec.name!r}; raise {spec.size_setting} or lower k."
        )


class NeighbourIndex:
    """The banks and the dataset graph of one run.

    Args:
        specs: Banks to build.
        backend: Search backend shared by every bank.
        device: Where the banks live.
    """

    def __init__(
        self, specs: list[BankSpec], backend: SearchBackend, device: str | torch.device = "cpu"
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"Bank names must be unique, got {names}.")
        for spec in specs:
            validate_bank_spec(spec)
        self.specs = {s.name: s for s in specs}
        self.backend = backend
        self.banks = {
            s.name: NeighbourBank(
                s.name, s.size, s.dim, s.payloads, init=s.init, backend=backend, device=device
            )
            for s in specs
        }
        self.dataset_graph: DatasetGraph | None = None

    def bank(self, name: str) -> NeighbourBank:
        """Return the bank called ``name``."""
        if name not in self.banks:
            raise KeyError(f"No bank {name!r}; this run has {sorted(self.banks)}.")
        return self.banks[name]

    def to(self, device: str | torch.device) -> NeighbourIndex:
        """Move every bank (and the dataset graph) to ``device``."""
        for bank in self.banks.values():
            bank.to(device)
        if self.dataset_graph is not None:
            self.dataset_graph.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """CPU copies of every bank and of the dataset graph."""
        return {
            "banks": {name: bank.state_dict() for name, bank in self.banks.items()},
            "dataset_graph": (
                None if self.dataset_graph is None else self.dataset_graph.state_dict()
            ),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore banks (and the dataset graph) saved by :meth:`state_dict`."""
        saved = state.get("banks", {})
        missing = sorted(set(self.banks) - set(saved))
        if missing:
            raise ValueError(
                f"The checkpoint has no state for bank(s) {missing}; it was written by a "
                "different method or configuration."
            )
        for name, bank in self.banks.items():
            bank.load_state_dict(saved[name])
        if state.get("dataset_graph") is not None:
            self.dataset_graph = DatasetGraph.from_state_dict(state["dataset_graph"])
