"""The LightningDataModule: sources, per-sample datasets and loaders.

Every dataset item is a dict that carries the sample's true dataset index (its position in
the source), so neighbour banks and dataset indices can refer back to images:

* training, ``pipeline=cpu``: ``{"views": [float [3, s, s], ...], "label", "index"}``;
* training, ``pipeline=gpu`` with an in-memory source (CIFAR, STL-10, npz, the built-in
  subset): ``{"label", "index"}`` only, whole batches sliced on the device from one
  permutation per epoch (:class:`~nbr_contrast.data.sampling.ResidentBatchSampler`). The
  whole dataset lives on the device as one ``uint8 [N, 3, H, W]`` tensor; after the batch
  is moved, the images are gathered by index there and turned into ``"views"`` by
  :attr:`NbrDataModule.gpu_views`, so the loader never decodes, copies or augments an image;
* training, ``pipeline=gpu`` with a lazy source (image folders): ``{"crops": [uint8
  [3, s, s], ...], "label", "index"}``, each view's crop cut from the full image on the CPU
  (:mod:`nbr_contrast.data.crops`), the rest of the views made on the device;
* evaluation (validation, whole-train-set passes): ``{"image": float [3, S, S], "label",
  "index"}`` with ``S = data.image_size``.

Unlabelled training images carry ``"label": -1``. Validation then needs labelled images from
elsewhere (:class:`~nbr_contrast.data.sources.DataSources`): with a reference set it has two
loaders, the reference images (the kNN monitor's bank) and the test images; with no test
images at all, none (:attr:`NbrDataModule.monitored` is false).

When a method asks for neighbour images (CLIM), training items also carry one neighbour of
the sample drawn per step from a :class:`~nbr_contrast.data.neighbour_table.NeighbourTable`:
``"neighbour_views"`` (``"neighbour_crops"`` on the GPU pipeline of a lazy source) and its index
``"neighbour_index"``. The datasets are in :mod:`nbr_contrast.data.datasets`, their order in
:mod:`nbr_contrast.data.sampling`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nbr_contrast.data.config import DataConfig, ViewConfig
from nbr_contrast.data.crops import CropDataset
from nbr_contrast.data.datasets import ResidentDataset, SourceDataset
from nbr_contrast.data.image_source import ImageSource
from nbr_contrast.data.neighbour_table import NeighbourTable
from nbr_contrast.data.sampling import ResidentBatchSampler, ResumableSampler
from nbr_contrast.data.shard_sampler import training_sampler
from nbr_contrast.data.sources import DataSources, build_sources, check_labels
from nbr_contrast.data.views import build_eval_transform, build_multiview, build_view_transform
from nbr_contrast.utils.dist import rank, world_size

PIPELINES = ("auto", "cpu", "gpu")
LINEAR_VIEW = ViewConfig(crop="rrc", flip_p=0.5, jitter_p=0.0, grayscale_p=0.0)


class NbrDataModule(L.LightningDataModule):
    """Training, validation and whole-train-set loaders for one :class:`DataConfig`.

    Attributes:
        cfg: The data config.
        seed: Seed of the training order.
        use_gpu: Set by the builder when training runs on a GPU; makes ``pipeline=auto``
            resolve to ``gpu``.
        gpu_views: Batched view generator (``uint8 [B, 3, H, W]``, or one ``uint8`` batch of
            crops per view, -> list of views) applied in :meth:`on_after_batch_transfer` to
            ``pipeline=gpu`` batches; set from outside.

    Args:
        cfg: The data config (dataclass or DictConfig).
        seed: Seed of the training order.

    Raises:
        ValueError: If ``data.views`` is empty or ``data.pipeline`` is unknown.
    """

    def __init__(self, cfg: DataConfig | DictConfig, seed: int = 0) -> None:
        super().__init__()
        if not cfg.views:
            raise ValueError("data.views is empty; configure at least one view.")
        if cfg.pipeline not in PIPELINES:
            raise ValueError(f"data.pipeline={cfg.pipeline!r} is unknown; valid: {PIPELINES}.")
        self.cfg = cfg
        self.seed = int(seed)
        self.use_gpu = False
        self.gpu_views: Callable[[Tensor | list[Tensor]], list[Tensor]] | None = None
        self._sources: DataSources | None = None
        self._train_eval: SourceDataset | None = None
        self.neighbours: NeighbourTable | None = None
        self._resident: Tensor | None = None
        self._resume_position: tuple[int, int] | None = None
        self.train_sampler: ResumableSampler | None = None

    # ------------------------------------------------------------------ sources
    def setup(self, stage: str | None = None) -> None:
        """Build the train and test sources (once; later calls do nothing).

        Raises:
            ValueError: If the source has more classes than ``data.num_classes``, or a label
                outside ``[0, data.num_classes)``.
        """
        if self._sources is not None:
            return
        sources = build_sources(self.cfg)
        named = [("training", sources.train), ("test", sources.test)]
        named.append(("reference", sources.reference))
        for split, source in named:
            if source is None:
                continue
            if len(source.classes) > int(self.cfg.num_classes):
                raise ValueError(
                    f"data.num_classes={self.cfg.num_classes} but the {split} data has "
                    f"{len(source.classes)} classes; set data.num_classes={len(source.classes)}."
                )
            check_labels(split, np.asarray(source.labels), int(self.cfg.num_classes))
        self._sources = sources

    @property
    def sources(self) -> DataSources:
        """The training, test and reference sources (built on first use)."""
        self.setup()
        assert self._sources is not None
        return self._sources

    @property
    def train_source(self) -> ImageSource:
        """The training images (built on first use)."""
        return self.sources.train

    @property
    def test_source(self) -> ImageSource | None:
        """The labelled test images (``None`` when there are none)."""
        return self.sources.test

    @property
    def reference_source(self) -> ImageSource | None:
        """Labelled images to classify test images against when training has no label."""
        return self.sources.reference

    @property
    def num_unlabelled(self) -> int:
        """Number of training images without a label (``-1``)."""
        return int((np.asarray(self.train_source.labels) < 0).sum())

    @property
    def labelled(self) -> bool:
        """Whether any training image has a label (the online probe trains on those)."""
        return self.num_unlabelled < self.num_train

    @property
    def monitored(self) -> bool:
        """Whether there are labelled test images to validate on."""
        return self.test_source is not None and (self.labelled or self.reference_source is not None)

    @property
    def classes(self) -> list[str]:
        """Class names of the labelled data (the training source's, else the test source's)."""
        test = self.test_source
        return self.train_source.classes or ([] if test is None else test.classes)

    @property
    def num_classes(self) -> int:
        """Number of classes of the training source."""
        return len(self.classes)

    @property
    def num_train(self) -> int:
        """Number of training images."""
        return len(self.train_source)

    @property
    def resolved_pipeline(self) -> str:
        """``"cpu"`` or ``"gpu"``: ``data.pipeline`` with ``auto`` resolved by :attr:`use_gpu`.

        Raises:
            ValueError: If ``data.pipeline`` is unknown.
        """
        pipeline = str(self.cfg.pipeline)
        if pipeline not in PIPELINES:
            raise ValueError(f"data.pipeline={pipeline!r} is unknown; valid: {PIPELINES}.")
        if pipeline == "auto":
            return "gpu" if self.use_gpu else "cpu"
        return pipeline

    # ---------------------------------------------------------------- neighbours
    def enable_neighbour_serving(self, k: int) -> None:
        """Allocate the shared neighbour table (before the training loader starts)."""
        if self.neighbours is None or self.neighbours.ids.shape[1] != k:
            self.neighbours = NeighbourTable(self.num_train, k)

    def set_neighbour_table(self, table: Tensor, counts: Tensor) -> None:
        """Serve, with every training item, one of its selected neighbours from now on.

        Raises:
            RuntimeError: If :meth:`enable_neighbour_serving` was not called first.
        """
        if self.neighbours is None:
            raise RuntimeError("Call enable_neighbour_serving(k) before the loader starts.")
        self.neighbours.update(table, counts)

    @property
    def neighbour_table(self) -> Tensor | None:
        """The served neighbour table ``[N, k]`` (None until one is set)."""
        return self.neighbours.ids if self.serving_neighbours else None

    @property
    def neighbour_counts(self) -> Tensor | None:
        """Selected neighbours per image ``[N]`` (None until a table is set)."""
        return self.neighbours.counts if self.serving_neighbours else None

    @property
    def serving_neighbours(self) -> bool:
        """Whether training items currently carry a neighbour image."""
        return self.neighbours is not None and bool(self.neighbours.active)

    # ----------------------------------------------------------------- datasets
    def train_dataset(self) -> Dataset[dict[str, Any]]:
        """The training dataset of the resolved pipeline (views, raw uint8, or indices)."""
        if self.resolved_pipeline == "gpu" and self.train_source.as_uint8() is not None:
            return ResidentDataset(self.train_source, self.train_device(), self.neighbours)
        if self.resolved_pipeline == "gpu":
            return CropDataset(self.train_source, list(self.cfg.views), self.neighbours)
        views = list(self.cfg.views)
        transform = build_multiview(views, self.cfg.mean, self.cfg.std)
        pair = build_multiview(views[:2], self.cfg.mean, self.cfg.std)
        return SourceDataset(self.train_source, transform, "views", self.neighbours, pair)

    def _eval_dataset(self, source: ImageSource) -> SourceDataset:
        size, crop_pct = int(self.cfg.image_size), float(self.cfg.eval_crop_pct)
        transform = build_eval_transform(size, self.cfg.mean, self.cfg.std, crop_pct)
        return SourceDataset(source, transform, "image")

    def train_eval_dataset(self) -> SourceDataset:
        """The training images, un-augmented with the evaluation transform (kNN banks etc.)."""
        if self._train_eval is None:
            self._train_eval = self._eval_dataset(self.train_source)
        return self._train_eval

    # ------------------------------------------------------------------ loaders
    def _loader(
        self,
        dataset: Dataset[dict[str, Any]],
        batch_size: int,
        shuffle: bool,
        sampler: ResumableSampler | None = None,
    ) -> DataLoader[dict[str, Any]]:
        """A loader of ``dataset`` (a training ``sampler`` also sets the training options).

        With a ``sampler`` the loader drops the incomplete last batch, keeps its workers
        from epoch to epoch and seeds its workers from :attr:`seed`.
        """
        training = sampler is not None
        workers = int(self.cfg.num_workers)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=training,
            num_workers=workers,
            persistent_workers=training and workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed) if shuffle or training else None,
        )

    def resume_at(self, epoch: int, batches: int) -> None:
        """Start the training loader at batch ``batches`` of epoch ``epoch`` (a resumed run).

        Applies to the loader built next by :meth:`train_dataloader`, or to the current one.
        """
        if self.train_sampler is not None:
            self.train_sampler.resume_at(epoch, batches)
        else:
            self._resume_position = (int(epoch), int(batches))

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Shuffled, ``drop_last`` training batches in a :class:`ResumableSampler` order.

        Raises:
            ValueError: If the training set is smaller than one batch.
        """
        dataset = self.train_dataset()
        batch_size = int(self.cfg.batch_size)
        if len(dataset) < batch_size:
            raise ValueError(
                f"data.batch_size={batch_size} is larger than the {len(dataset)} training "
                "images; lower data.batch_size."
            )
        if isinstance(dataset, ResidentDataset):
            return self._resident_loader(dataset, batch_size, *self._ranks())
        return self.resumable_loader(dataset, batch_size)

    def _ranks(self) -> tuple[int, int]:
        """``(world size, this rank)`` of the trainer, else of the process group."""
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer else (world_size(), rank())

    def resumable_loader(self, dataset: Dataset[Any], batch_size: int) -> DataLoader[Any]:
        """``drop_last`` training batches in the sharded, resumable training order."""
        workers = int(self.cfg.num_workers)  # WebDataset shards are split over them too
        order = training_sampler(
            self.train_source, dataset, batch_size, self.seed, *self._ranks(), workers
        )
        return self._loader(dataset, batch_size, False, self._start(order))

    def _resident_loader(
        self, dataset: ResidentDataset, batch_size: int, ranks: int, this: int
    ) -> DataLoader[dict[str, Any]]:
        """Batches sliced on the device in the main process (no workers: nothing to load)."""
        sampler = self._start(ResidentBatchSampler(dataset, batch_size, self.seed, ranks, this))
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=0)

    def _start(self, sampler: ResumableSampler) -> ResumableSampler:
        """Make ``sampler`` the training sampler, starting where :meth:`resume_at` asked."""
        self.train_sampler = sampler
        if self._resume_position is not None:
            sampler.resume_at(*self._resume_position)
            self._resume_position = None
        return sampler

    def val_dataloader(self) -> DataLoader[dict[str, Any]] | list[DataLoader[dict[str, Any]]]:
        """Labelled images with the evaluation transform, in order.

        The test images; when the training images have no label, the reference images then
        the test images (two loaders), or none when there is nothing to validate on
        (:attr:`monitored`).
        """
        if not self.monitored:
            return []
        assert self.test_source is not None
        test = self.eval_loader(self.test_source)
        if self.labelled or self.reference_source is None:
            return test
        return [self.eval_loader(self.reference_source), test]

    def eval_loader(self, source: ImageSource) -> DataLoader[dict[str, Any]]:
        """The images of ``source`` with the evaluation transform, in order."""
        return self._loader(self._eval_dataset(source), int(self.cfg.eval_batch_size), False)

    def index_dataloader(self, shuffle: bool = False) -> DataLoader[dict[str, Any]]:
        """Training images with the evaluation transform (for kNN banks and dataset indices).

        Args:
            shuffle: Visit the images in a seeded random order.

        Returns:
            The loader.
        """
        return self._loader(self.train_eval_dataset(), int(self.cfg.eval_batch_size), shuffle)

    def linear_train_dataloader(self, batch_size: int) -> DataLoader[dict[str, Any]]:
        """Training images for linear evaluation and fine-tuning: random-resized crop and flip.

        Items ``{"image": float [3, S, S], "label", "index"}`` (``S = data.image_size``),
        ``batch_size`` per rank, in the :meth:`resumable_loader` order (crop and flip seeded
        per item).
        """
        view = replace(LINEAR_VIEW, size=int(self.cfg.image_size))
        transform = build_view_transform(view, self.cfg.mean, self.cfg.std)
        dataset = SourceDataset(self.train_source, transform, "image")
        return self.resumable_loader(dataset, batch_size)

    # ------------------------------------------------------------------- device
    def train_device(self) -> torch.device:
        """The device training runs on (the CPU without a trainer)."""
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def resident_images(self, device: torch.device) -> Tensor:
        """The training set as one ``uint8 [N, 3, H, W]`` tensor on ``device`` (cached)."""
        if self._resident is None or self._resident.device != device:
            array = self.train_source.as_uint8()
            if array is None:
                raise ValueError("Only in-memory sources can be kept on the device.")
            self._resident = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().to(device)
        return self._resident

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Make a ``pipeline=gpu`` training batch's views on the device it was moved to."""
        if self.gpu_views is None or not isinstance(batch, dict) or "views" in batch:
            return batch
        if "crops" in batch:
            images, neighbours = batch.pop("crops"), batch.pop("neighbour_crops", None)
        elif "image" not in batch:
            resident = self.resident_images(batch["index"].device)
            images = resident[batch["index"]]
            nb_index = batch.get("neighbour_index")
            neighbours = None if nb_index is None else resident[nb_index]
        else:
            return batch
        batch["views"] = self.gpu_views(images)
        if neighbours is not None:
            batch["neighbour_views"] = self.gpu_views(neighbours)[:2]
        return batch
