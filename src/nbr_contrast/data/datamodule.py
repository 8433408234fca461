"""``ViewsDataModule``: any map-style datasets as training, validation and plain-image loaders.

It takes the training images (and, optionally, labelled test images) as map-style torch
``Dataset`` objects whose items are an image (PIL, ``uint8`` tensor) or an ``(image,
label)`` pair, or as :class:`~nbr_contrast.data.image_source.ImageSource` objects (the
built-in subset, CIFAR, STL-10, image folders and lists, WebDataset shards: see
:mod:`nbr_contrast.data.sources`), and the views as a recipe name or a list. It works in
any Lightning ``Trainer``; on a GPU it makes the views on the device by itself.

Every dataset item is a dict that carries the sample's id (``sample_id``, its position in
the source), so neighbour banks and dataset graphs can refer back to images:

* training, ``pipeline=cpu``: ``{"views": [float [3, s, s], ...], "label", "sample_id"}``;
* training, ``pipeline=gpu`` with an in-memory source (CIFAR, STL-10, npz, the built-in
  subset): ``{"label", "sample_id"}`` only, whole batches sliced on the device from one
  permutation per epoch (:class:`~nbr_contrast.data.sampling.ResidentBatchSampler`). The
  whole dataset lives on the device as one ``uint8 [N, 3, H, W]`` tensor; after the batch
  is moved, the images are gathered by index there and turned into ``"views"`` by
  :attr:`ViewsDataModule.gpu_views`, so the loader never decodes, copies or augments an
  image;
* training, ``pipeline=gpu`` with a lazy source (image folders, your own dataset):
  ``{"crops": [uint8 [3, s, s], ...], "label", "sample_id"}``, each view's crop cut from the
  full image on the CPU (:mod:`nbr_contrast.data.crops`), the rest of the views made on
  the device;
* evaluation (validation, whole-train-set passes): ``{"image": float [3, S, S], "label",
  "sample_id"}`` with ``S = image_size``.

Unlabelled training images carry ``"label": -1``. Validation then needs labelled images from
elsewhere: with a reference set it has two loaders, the reference images (the kNN monitor's
bank) and the test images; with no test images at all, none (:attr:`ViewsDataModule.monitored`
is false).

When a method asks for neighbour images (CLIM), training items also carry one neighbour of
the sample drawn per step from a :class:`~nbr_contrast.data.neighbour_table.NeighbourTable`:
``"neighbour_views"`` (``"neighbour_crops"`` on the GPU pipeline of a lazy source) and its index
``"neighbour_id"``. The datasets are in :mod:`nbr_contrast.data.datasets`, their order in
:mod:`nbr_contrast.data.sampling`; the protocols it implements for the methods in
:mod:`nbr_contrast.data.protocols`.

Size: one LightningDataModule: its sources, the datasets and loaders of the three
pipelines, the neighbour serving and the device-side view hook, which share one sampler,
seed and resume position.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from nbr_contrast.data.config import ViewConfig
from nbr_contrast.data.crops import CropDataset
from nbr_contrast.data.dataset_source import as_source
from nbr_contrast.data.datasets import ResidentDataset, SourceDataset
from nbr_contrast.data.image_source import ImageSource
from nbr_contrast.data.neighbour_table import NeighbourTable
from nbr_contrast.data.recipes import as_views
from nbr_contrast.data.sampling import ResidentBatchSampler, ResumableSampler, training_position
from nbr_contrast.data.shard_sampler import training_sampler
from nbr_contrast.data.sources import DataSources, check_classes
from nbr_contrast.data.views import build_eval_transform, build_multiview, build_view_transform
from nbr_contrast.utils.dist import rank, world_size

PIPELINES = ("auto", "cpu", "gpu")
LINEAR_VIEW = ViewConfig(crop="rrc", flip_p=0.5, jitter_p=0.0, grayscale_p=0.0)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class ViewsDataModule(L.LightningDataModule):
    """Training, validation and whole-train-set loaders over map-style datasets.

    Args:
        train: The training images: a map-style ``Dataset`` of images or ``(image, label)``
            pairs, or an :class:`~nbr_contrast.data.image_source.ImageSource`.
        test: Labelled test images (validation: probe, kNN monitor), of the same kinds;
            ``None``: no validation.
        views: A view recipe name (``"byol"``, ``"mocov2"``, ``"msf"``, ``"clim"``,
            ``"supervised"``: ``conf/views/<name>.yaml`` at ``image_size``) or a list of
            :class:`~nbr_contrast.data.config.ViewConfig` (or mappings of their fields).
        batch_size: Per-device training batch size.
        eval_batch_size: Per-device batch size of validation and feature passes.
        num_workers: Loader worker processes.
        pipeline: ``cpu`` (per-sample transforms in loader workers), ``gpu`` (``uint8``
            images augmented in batches on the device) or ``auto`` (``gpu`` when the Trainer
            runs on a GPU).
        image_size: Side of the evaluation images and of a recipe's views (``None``: the
            shorter side of the first training image).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        eval_crop_pct: The evaluation transform resizes the shorter side to
            ``round(image_size / eval_crop_pct)`` and keeps the centre square.
        reference: Labelled images the kNN monitor classifies ``test`` against when the
            training images have no labels.
        num_classes: Number of classes (``None``: the training data's).
        seed: Seed of the training order and augmentations (``None``: the seed of
            ``L.seed_everything``, else 0).
        compile_views: ``torch.compile`` the GPU view pipeline.

    Attributes:
        use_gpu: Whether ``pipeline=auto`` resolves to ``gpu`` (set in :meth:`setup` from
            the Trainer's device).
        gpu_views: Batched view generator applied in :meth:`on_after_batch_transfer` to
            ``pipeline=gpu`` batches (made in :meth:`setup`).

    Raises:
        ValueError: For an unknown pipeline or view recipe, an empty view list, a count
            below 1, or labels outside ``[0, num_classes)``.
        TypeError: For a dataset whose items are not images.
    """

    def __init__(
        self,
        train: Dataset[Any] | ImageSource,
        test: Dataset[Any] | ImageSource | None = None,
        views: str | Sequence[ViewConfig | Mapping[str, Any]] = "byol",
        batch_size: int = 256,
        eval_batch_size: int = 512,
        num_workers: int = 2,
        pipeline: str = "auto",
        image_size: int | None = None,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
        eval_crop_pct: float = 1.0,
        reference: Dataset[Any] | ImageSource | None = None,
        num_classes: int | None = None,
        seed: int | None = None,
        compile_views: bool = False,
    ) -> None:
        super().__init__()
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline={pipeline!r} is unknown; valid: {', '.join(PIPELINES)}.")
        for name, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
        ):
            if int(value) < 1:
                raise ValueError(f"{name}={value} must be at least 1.")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0.")
        if not 0 < float(eval_crop_pct) <= 1:
            raise ValueError(f"eval_crop_pct={eval_crop_pct} must be in (0, 1].")
        sources = DataSources(
            as_source(train, "train"),
            None if test is None else as_source(test, "test"),
            None if reference is None else as_source(reference, "reference"),
        )
        self.image_size = int(image_size or first_image_side(sources.train))
        self.views = as_views(views, self.image_size)
        classes = num_classes if num_classes is not None else count_classes(sources)
        check_classes(sources, int(classes))
        self._sources = sources
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.pipeline = str(pipeline)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.eval_crop_pct = float(eval_crop_pct)
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else int(seed)
        self.compile_views = bool(compile_views)
        self.use_gpu = False
        self.gpu_views: Callable[[Tensor | list[Tensor]], list[Tensor]] | None = None
        self._train_eval: SourceDataset | None = None
        self.neighbours: NeighbourTable | None = None
        self._resident: Tensor | None = None
        self._resume_position: tuple[int, int] | None = None
        self.train_sampler: ResumableSampler | None = None

    # ------------------------------------------------------------------ sources
    def setup(self, stage: str | None = None) -> None:
        """Attach the GPU view pipeline when the Trainer runs on a GPU and it is used."""
        if self.trainer is not None:
            self.use_gpu = self.trainer.strategy.root_device.type == "cuda"
        if self.gpu_views is None and self.resolved_pipeline == "gpu":
            from nbr_contrast.data.gpu_views import GpuViews

            self.gpu_views = GpuViews(self.views, self.mean, self.std, compile=self.compile_views)

    @property
    def sources(self) -> DataSources:
        """The training, test and reference sources."""
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
        pipeline = self.pipeline
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline={pipeline!r} is unknown; valid: {', '.join(PIPELINES)}.")
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
            return CropDataset(self.train_source, self.views, self.neighbours)
        transform = build_multiview(self.views, self.mean, self.std)
        pair = build_multiview(self.views[:2], self.mean, self.std)
        return SourceDataset(self.train_source, transform, "views", self.neighbours, pair)

    def _eval_dataset(self, source: ImageSource) -> SourceDataset:
        transform = build_eval_transform(self.image_size, self.mean, self.std, self.eval_crop_pct)
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
        workers = self.num_workers
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

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position, ``(epoch, batches of it already drawn)``.

        A checkpoint keeps it, so ``trainer.fit(..., ckpt_path=...)`` draws the batch after
        the last one trained, in the middle of an epoch too (Lightning itself restores only
        its batch counters).
        """
        return training_position(self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Start the training loader where the checkpoint's run stopped.

        Lightning restores this before it builds the training loader (it does so early,
        to count the schedule's steps, and with loader workers the iterator draws the
        sampler's order at once).
        """
        if state_dict:
            self.resume_at(int(state_dict["epoch"]), int(state_dict["batches"]))

    def resume_at(self, epoch: int, batches: int) -> None:
        """Start the training loader at batch ``batches`` of epoch ``epoch`` (a resumed run).

        Applies to the loader built next by :meth:`train_dataloader`, or to the current one.
        """
        if self.train_sampler is not None:
            self.train_sampler.resume_at(epoch, batches)
        else:
            self._resume_position = (int(epoch), int(batches))

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        """Shuffled, ``drop_last`` training batches in a resumable order.

        The order is :class:`~nbr_contrast.data.sampling.ResumableSampler`'s.

        Raises:
            ValueError: If the training set is smaller than one batch.
        """
        dataset = self.train_dataset()
        batch_size = self.batch_size
        if len(dataset) < batch_size:
            raise ValueError(
                f"batch_size={batch_size} (data.batch_size) is larger than the {len(dataset)} "
                "training images; lower it."
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
        workers = self.num_workers  # WebDataset shards are split over them too
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
        return self._loader(self._eval_dataset(source), self.eval_batch_size, False)

    def index_dataloader(self, shuffle: bool = False) -> DataLoader[dict[str, Any]]:
        """Training images with the evaluation transform (for kNN banks and dataset graphs).

        Args:
            shuffle: Visit the images in a seeded random order.

        Returns:
            The loader.
        """
        return self._loader(self.train_eval_dataset(), self.eval_batch_size, shuffle)

    def plain_train_loader(self, rank: int = 0, world_size: int = 1) -> DataLoader[dict[str, Any]]:
        """Every ``world_size``-th training image from ``rank`` on, un-augmented, in order.

        The whole-dataset graph's input (:class:`~nbr_contrast.data.protocols.PlainTrainImages`):
        items ``{"image", "label", "sample_id"}`` with the evaluation transform.
        """
        dataset = self.train_eval_dataset()
        shard = list(range(rank, len(dataset), world_size))
        return DataLoader(
            Subset(dataset, shard),
            batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
        )

    def linear_train_dataloader(self, batch_size: int) -> DataLoader[dict[str, Any]]:
        """Training images for linear evaluation and fine-tuning: random-resized crop and flip.

        Items ``{"image": float [3, S, S], "label", "sample_id"}`` (``S = image_size``),
        ``batch_size`` per rank, in the :meth:`resumable_loader` order (crop and flip seeded
        per item).
        """
        view = replace(LINEAR_VIEW, size=self.image_size)
        transform = build_view_transform(view, self.mean, self.std)
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
            resident = self.resident_images(batch["sample_id"].device)
            images = resident[batch["sample_id"]]
            nb_index = batch.get("neighbour_id")
            neighbours = None if nb_index is None else resident[nb_index]
        else:
            return batch
        batch["views"] = self.gpu_views(images)
        if neighbours is not None:
            batch["neighbour_views"] = self.gpu_views(neighbours)[:2]
        return batch


def first_image_side(source: ImageSource) -> int:
    """The shorter side of the first image of ``source``."""
    array = source.as_uint8()
    if array is not None:
        return int(min(array.shape[1:3]))
    return int(min(source.get_image(0).size))


def count_classes(sources: DataSources) -> int:
    """Classes of the labelled data: the training source's names, else the test source's."""
    for source in (sources.train, sources.test, sources.reference):
        if source is not None and source.classes:
            return len(source.classes)
    return 1
