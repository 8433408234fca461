"""``NeighbourIndexCallback``: the one owner of the neighbour index's lifecycle.

- ``setup``: build the banks the method declares, sized from its config, and attach the
  index to the method as ``method.neighbours`` (a read handle).
- ``on_fit_start``: move the index to the method's device.
- ``on_train_batch_end``: enqueue what the step returned under ``"enqueue"``; for
  ``scope="global"`` banks the entries are gathered from every rank first, in rank order, so
  all ranks hold identical banks. This runs after the optimiser step, so a batch never
  finds itself and every loss sees the bank as it was *before* the batch.
- ``on_train_epoch_start``: rebuild the whole-dataset index on its schedule.
- ``state_dict``/``load_state_dict``: banks and dataset index travel in the checkpoint.

On logging steps (every ``trainer.log_every_n_steps``) it times the step's searches (CUDA
events on GPUs) and logs their sum, ``index/search_ms``; other steps neither time nor log,
so they never wait for the device.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nbr_contrast.app.config import IndexConfig
from nbr_contrast.monitors.features import extract_features
from nbr_contrast.neighbours.dataset_index import DatasetIndex
from nbr_contrast.neighbours.index import DatasetIndexSpec, NeighbourIndex
from nbr_contrast.neighbours.search import make_backend
from nbr_contrast.utils.dist import gather_no_grad, rank, world_size
from nbr_contrast.utils.steps import is_logging_step


class NeighbourIndexCallback(Callback):
    """Builds, feeds, refreshes and checkpoints the method's neighbour index.

    Args:
        cfg: The ``index`` config (backend and search settings).
        seed: Seed for k-means in the dataset index.
    """

    def __init__(self, cfg: IndexConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self.index: NeighbourIndex | None = None
        self._pending: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        """One state slot per run (independent of constructor arguments)."""
        return "NeighbourIndexCallback"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Build the index from the method's declarations."""
        if self.index is not None:
            return
        specs = pl_module.neighbour_specs()
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        self.index = NeighbourIndex(specs, make_backend(self.cfg, device))
        pl_module.neighbours = self.index
        if self._pending is not None:
            self.index.load_state_dict(self._pending)
            self._pending = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Move the banks next to the model."""
        if self.index is not None:
            self.index.to(pl_module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Time this step's searches if it is a logging step."""
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
            self.index.bank(name).enqueue(entries["embeddings"], **payloads)
        banks = list(self.index.banks.values())
        if banks and banks[0].timed:
            total = sum(b.take_search_ms() for b in banks)
            pl_module.log("index/search_ms", total, on_step=True, on_epoch=False)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rebuild the whole-dataset index when its schedule says so."""
        spec: DatasetIndexSpec | None = pl_module.dataset_index_spec()
        if spec is None or self.index is None:
            return
        epoch = trainer.current_epoch
        if epoch < spec.warmup_epochs or (epoch - spec.warmup_epochs) % spec.refresh_every:
            return
        current = self.index.dataset_index
        if current is not None and current.epoch == epoch:
            return
        self.index.dataset_index = self.build_dataset_index(trainer, pl_module, spec)
        self.index.dataset_index.epoch = epoch
        purity = self.index.dataset_index.neighbour_purity()
        if purity is not None:
            pl_module.log("index/dataset_knn_purity", purity, on_epoch=True, on_step=False)

    def build_dataset_index(
        self, trainer: L.Trainer, pl_module: L.LightningModule, spec: DatasetIndexSpec
    ) -> DatasetIndex:
        """Embed every training image (each rank a shard, then gathered) and index it."""
        datamodule = trainer.datamodule
        dataset = datamodule.train_eval_dataset()
        shard = list(range(rank(), len(dataset), world_size()))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, shard),
            batch_size=int(datamodule.cfg.eval_batch_size),
            num_workers=int(datamodule.cfg.num_workers),
        )
        encoder = pl_module.index_encoder()
        feats, labels, indices = extract_features(
            encoder, loader, pl_module.device, normalize=True, progress=False
        )
        feats = gather_no_grad(feats.to(pl_module.device))
        labels = gather_no_grad(labels.to(pl_module.device))
        indices = gather_no_grad(indices.to(pl_module.device))
        order = torch.argsort(indices)
        return DatasetIndex.build(
            feats[order],
            labels[order],
            k=spec.k,
            n_clusters=spec.n_clusters,
            backend=self.index.backend,
            kmeans_iters=self.cfg.kmeans_iters,
            seed=self.seed,
        )

    def state_dict(self) -> dict[str, Any]:
        """The index's state (banks, dataset index) for the checkpoint."""
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
