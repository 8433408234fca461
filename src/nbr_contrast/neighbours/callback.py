"""``NeighbourIndexCallback``: the one owner of the neighbour index's lifecycle.

- ``on_train_start``: build the banks the method declares (``neighbour_specs()``), now that
  the training loader is set up (a bank may be sized from it), attach the index to the
  method as ``method.neighbours`` (a read handle) and put it on the method's device.
- ``on_train_batch_end``: enqueue what the step returned under ``"enqueue"``; for
  ``scope="global"`` banks the entries are gathered from every rank first, in rank order, so
  all ranks hold identical banks. This runs after the optimiser step, so a batch never
  finds itself and every loss sees the bank as it was *before* the batch.
- ``on_train_epoch_start``: rebuild the whole-dataset graph on its schedule, from the
  datamodule's un-augmented training images
  (:class:`~nbr_contrast.data.protocols.PlainTrainImages`).
- ``state_dict``/``load_state_dict``: banks and dataset graph travel in the checkpoint.

It needs nothing but the method: any LightningModule that declares banks works, and one
that declares none is left alone. On logging steps (every ``trainer.log_every_n_steps``) it
times the step's searches (CUDA events on GPUs) and logs their sum, ``index/search_ms``;
other steps neither time nor log, so they never wait for the device.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from nbr_contrast.data.protocols import PlainTrainImages, require
from nbr_contrast.monitors.features import extract_features
from nbr_contrast.neighbours.dataset_graph import DatasetGraph
from nbr_contrast.neighbours.index import BankSpec, DatasetGraphSpec, NeighbourIndex
from nbr_contrast.neighbours.search import BACKENDS, search_backend
from nbr_contrast.utils.batches import per_device_batch_size
from nbr_contrast.utils.dist import gather_no_grad, rank, world_size
from nbr_contrast.utils.steps import is_logging_step


def self_retrieval_note(trainer: L.Trainer, who: str, spec: BankSpec) -> str | None:
    """One line when bank ``spec`` holds at least an epoch's samples (else ``None``).

    Such a bank keeps every sample's entry of the previous epoch, so from the second epoch
    on a search can return the sample's own earlier entry unless the method excludes it.
    """
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        return None
    ranks = trainer.world_size if spec.scope == "global" else 1
    per_epoch = int(batches) * per_device_batch_size(trainer) * ranks
    if spec.size < per_epoch:
        return None
    how = (
        "excludes them (exclude_self=True)"
        if spec.exclude_self
        else "can retrieve them (exclude_self=False; see train/nbr/self_retrieval)"
    )
    return (
        f"{who}: bank {spec.name!r} ({spec.size:,} entries) holds at least the {per_epoch:,} "
        f"samples of an epoch, so from the second epoch on it holds each sample's own earlier "
        f"entry; {who} {how}."
    )


class NeighbourIndexCallback(Callback):
    """Builds, feeds, refreshes and checkpoints the method's neighbour index.

    Args:
        backend: ``auto`` (FAISS when installed and where the banks live, else torch),
            ``torch`` or ``faiss``.
        chunk_size: Bank rows scored per chunk by the torch backend (bounds memory).
        half: Score in fp16/bf16 on GPU (exact ranking up to rounding).
        ivf_threshold: FAISS uses an IVF index for dataset graphs larger than this.
        ivf_nprobe: IVF cells visited per query.
        kmeans_iters: Iterations of spherical k-means in the dataset graph.
        seed: Seed of that k-means (``None``: the seed of ``L.seed_everything``, else 0).

    Raises:
        ValueError: For an unknown backend or a count below 1.
    """

    def __init__(
        self,
        backend: str = "auto",
        chunk_size: int = 262144,
        half: bool = False,
        ivf_threshold: int = 2_000_000,
        ivf_nprobe: int = 64,
        kmeans_iters: int = 20,
        seed: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(
                f"NeighbourIndexCallback(backend={backend!r}): valid: {', '.join(BACKENDS)}."
            )
        for name, value in (
            ("chunk_size", chunk_size),
            ("ivf_threshold", ivf_threshold),
            ("ivf_nprobe", ivf_nprobe),
            ("kmeans_iters", kmeans_iters),
        ):
            if int(value) < 1:
                raise ValueError(f"NeighbourIndexCallback({name}={value}): must be at least 1.")
        self.backend = backend
        self.chunk_size = int(chunk_size)
        self.half = bool(half)
        self.ivf_threshold = int(ivf_threshold)
        self.ivf_nprobe = int(ivf_nprobe)
        self.kmeans_iters = int(kmeans_iters)
        self.seed = seed
        self.index: NeighbourIndex | None = None
        self._pending: dict[str, Any] | None = None
        self._step = 0

    @property
    def state_key(self) -> str:
        """One state slot per run (independent of constructor arguments)."""
        return "NeighbourIndexCallback"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Build and attach the index (once); name the banks that hold earlier entries."""
        self.build(pl_module)
        for spec in self.index.specs.values() if self.index is not None else ():
            line = self_retrieval_note(trainer, type(pl_module).__name__, spec)
            if line:
                rank_zero_info(line)

    def build(self, pl_module: L.LightningModule) -> NeighbourIndex:
        """The method's neighbour index, built on first use, attached and on its device.

        A checkpoint's banks restored before the index existed are loaded into it now.
        """
        device = getattr(pl_module, "device", torch.device("cpu"))
        if self.index is None:
            specs = pl_module.neighbour_specs() if hasattr(pl_module, "neighbour_specs") else []
            backend = search_backend(
                self.backend,
                device,
                chunk_size=self.chunk_size,
                half=self.half,
                ivf_threshold=self.ivf_threshold,
                nprobe=self.ivf_nprobe,
            )
            self.index = NeighbourIndex(specs, backend)
            if self._pending is not None:
                self.index.load_state_dict(self._pending)
                self._pending = None
        pl_module.neighbours = self.index
        return self.index.to(device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Note the step the batch's entries come from; time its searches on a logging step."""
        self._step = trainer.global_step
        if self.index is not None:
            timed = is_logging_step(trainer)
            for bank in self.index.banks.values():
                bank.timed = timed

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Enqueue the step's entries (gathered across ranks for global banks)."""
        if self.index is None or not isinstance(outputs, dict):
            return
        for name, entries in outputs.get("enqueue", {}).items():
            spec = self.index.specs[name]
            if spec.scope == "global":
                entries = {key: gather_no_grad(t) for key, t in entries.items()}
            payloads = {k: v for k, v in entries.items() if k != "embeddings"}
            self.index.bank(name).enqueue(entries["embeddings"], step=self._step, **payloads)
        banks = list(self.index.banks.values())
        if banks and banks[0].timed:
            total = sum(b.take_search_ms() for b in banks)
            pl_module.log("index/search_ms", total, on_step=True, on_epoch=False)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rebuild the whole-dataset graph when its schedule says so."""
        spec = getattr(pl_module, "dataset_graph_spec", lambda: None)()
        if spec is None or self.index is None:
            return
        epoch = trainer.current_epoch
        if epoch < spec.warmup_epochs or (epoch - spec.warmup_epochs) % spec.refresh_every:
            return
        current = self.index.dataset_graph
        if current is not None and current.epoch == epoch:
            return
        self.index.dataset_graph = self.build_dataset_graph(trainer, pl_module, spec)
        self.index.dataset_graph.epoch = epoch
        self.index.dataset_graph.built_at_step = trainer.global_step
        purity = self.index.dataset_graph.neighbour_purity()
        if purity is not None:
            pl_module.log("index/dataset_knn_purity", purity, on_epoch=True, on_step=False)

    def build_dataset_graph(
        self, trainer: L.Trainer, pl_module: L.LightningModule, spec: DatasetGraphSpec
    ) -> DatasetGraph:
        """Embed every training image (each rank a shard, then gathered) and index it."""
        assert self.index is not None
        who = type(pl_module).__name__
        data = require(trainer.datamodule, PlainTrainImages, who, "its whole-dataset graph")
        loader = data.plain_train_loader(rank(), world_size())
        feats, labels, indices = extract_features(
            pl_module.graph_encoder(), loader, pl_module.device, normalize=True, progress=False
        )
        feats = gather_no_grad(feats.to(pl_module.device))
        labels = gather_no_grad(labels.to(pl_module.device))
        indices = gather_no_grad(indices.to(pl_module.device))
        order = torch.argsort(indices)
        return DatasetGraph.build(
            feats[order],
            labels[order],
            k=spec.k,
            n_clusters=spec.n_clusters,
            backend=self.index.backend,
            kmeans_iters=self.kmeans_iters,
            seed=self.kmeans_seed(),
        )

    def kmeans_seed(self) -> int:
        """``seed``, else the seed of ``L.seed_everything`` (``PL_GLOBAL_SEED``), else 0."""
        if self.seed is not None:
            return int(self.seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def state_dict(self) -> dict[str, Any]:
        """The index's state (banks, dataset graph) for the checkpoint."""
        if self.index is None:
            return self._pending or {}
        return self.index.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the index now, or when it is built if it does not exist yet."""
        if not state_dict:
            return
        if self.index is None:
            self._pending = state_dict
        else:
            self.index.load_state_dict(state_dict)
