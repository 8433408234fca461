from __future__ import annotations

import torch

from nbr_contrast.app.build import datamodule_of
from nbr_contrast.data.config import DataConfig, ViewConfig
from nbr_contrast.data.datamodule import ViewsDataModule
from nbr_contrast.data.datasets import ResidentDataset
from nbr_contrast.data.gpu_views import GpuViews
from nbr_contrast.data.sampling import ResumableSampler

PLAIN = ViewConfig(size=32, crop="none", flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)


def make(views: list[ViewConfig]) -> ViewsDataModule:
    cfg = DataConfig(views=views, batch_size=8, num_workers=0, pipeline="gpu")
    datamodule = datamodule_of(cfg, 0)
    datamodule.gpu_views = GpuViews(views, list(cfg.mean), list(cfg.std))
    datamodule.setup("fit")
    return datamodule


def test_in_memory_source_is_served_as_indices() -> None:
    datamodule = make([PLAIN, PLAIN])
    assert isinstance(datamodule.train_dataset(), ResidentDataset)
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"label", "sample_id"}


def test_views_are_made_from_the_resident_images_of_the_batch_indices() -> None:
    datamodule = make([PLAIN, ViewConfig(size=16)])
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    plain, small = batch["views"]
    assert plain.shape == (8, 3, 32, 32) and small.shape == (8, 3, 16, 16)
    mean = torch.tensor(datamodule.mean).view(1, 3, 1, 1)
    std = torch.tensor(datamodule.std).view(1, 3, 1, 1)
    source = torch.from_numpy(datamodule.train_source.as_uint8()[batch["sample_id"].numpy()])
    expected = (source.permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert torch.allclose(plain, expected, atol=1e-5)
    labels = torch.as_tensor(datamodule.train_source.labels)[batch["sample_id"]]
    assert torch.equal(batch["label"], labels)


def test_served_neighbours_are_gathered_too() -> None:
    datamodule = make([PLAIN, PLAIN])
    datamodule.enable_neighbour_serving(1)
    n = datamodule.num_train
    datamodule.set_neighbour_table(
        ((torch.arange(n) + 5) % n)[:, None], torch.ones(n, dtype=torch.int64)
    )
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert torch.equal(batch["neighbour_id"], (batch["sample_id"] + 5) % n)
    nb = datamodule.resident_images(torch.device("cpu"))[batch["neighbour_id"]]
    again = datamodule.gpu_views(nb)[0]
    assert torch.allclose(batch["neighbour_views"][0], again)


def test_validation_batches_are_left_alone() -> None:
    datamodule = make([PLAIN, PLAIN])
    batch = next(iter(datamodule.val_dataloader()))
    out = datamodule.on_after_batch_transfer(dict(batch), 0)
    assert set(out) == {"image", "label", "sample_id"}


def test_batches_follow_the_per_sample_sampler_order_and_resume_exactly() -> None:
    datamodule = make([PLAIN, PLAIN])
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(3)
    batches = [b["sample_id"] for b in loader]
    assert len(batches) == datamodule.num_train // 8
    reference = ResumableSampler(datamodule.train_dataset(), 8, seed=0)
    reference.set_epoch(3)
    order = torch.tensor([i for i, _ in reference])
    assert torch.equal(torch.cat(batches), order[: len(batches) * 8])
    datamodule.resume_at(3, 5)
    assert torch.equal(next(iter(loader))["sample_id"], batches[5])


def test_served_neighbours_are_reproducible_per_batch() -> None:
    datamodule = make([PLAIN, PLAIN])
    datamodule.enable_neighbour_serving(3)
    n = datamodule.num_train
    table = torch.stack([(torch.arange(n) + s) % n for s in (1, 2, 3)], dim=1)
    datamodule.set_neighbour_table(table, torch.full((n,), 3, dtype=torch.int64))
    batches = list(datamodule.train_dataloader())
    again = [b["neighbour_id"] for b in datamodule.train_dataloader()]
    first = [b["neighbour_id"] for b in batches]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    index = torch.cat([b["sample_id"] for b in batches])
    columns = (torch.cat(first) - index) % n
    assert set(columns.tolist()) == {1, 2, 3}  # each sample draws among its three
