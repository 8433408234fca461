"""The datamodule: item format, true indices, pipelines, loaders and validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from nbr_contrast.app.build import datamodule_of
from nbr_contrast.data.config import DataConfig, ViewConfig
from nbr_contrast.data.datamodule import ViewsDataModule

MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]


def identity_view(size: int = 32) -> ViewConfig:
    return ViewConfig(size=size, crop="none", flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)


def normalised(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> normalised float, as the transforms do."""
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (image.float() / 255 - mean) / std


def module(seed: int = 0, **fields: Any) -> ViewsDataModule:
    cfg = {"num_workers": 0, "batch_size": 64, "eval_batch_size": 100, **fields}
    dm = datamodule_of(DataConfig(**cfg), seed)
    dm.setup("fit")
    return dm


def source_images(dm: ViewsDataModule, indices: torch.Tensor) -> torch.Tensor:
    array = dm.train_source.as_uint8()[indices.numpy()]
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def test_setup_exposes_sources_and_is_idempotent() -> None:
    dm = module()
    train = dm.train_source
    dm.setup("validate")
    assert dm.train_source is train
    assert (dm.num_train, len(dm.test_source), dm.num_classes) == (5000, 1000, 10)
    assert dm.classes[0] == "airplane"
    assert len(dm.train_eval_dataset()) == 5000


def test_cpu_batches_hold_views_labels_true_indices() -> None:
    views = [identity_view(32), ViewConfig(size=16)]
    dm = module(views=views, pipeline="cpu")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"views", "label", "sample_id"}
    assert [tuple(v.shape) for v in batch["views"]] == [(64, 3, 32, 32), (64, 3, 16, 16)]
    assert batch["views"][1].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["sample_id"].dtype == torch.int64
    index = batch["sample_id"]
    assert len(set(index.tolist())) == 64 and index.tolist() != list(range(64))
    torch.testing.assert_close(batch["views"][0], normalised(source_images(dm, index)))
    assert batch["label"].tolist() == dm.train_source.labels[index.numpy()].tolist()


def test_drop_last_on_a_small_npz(npz_factory: Callable[..., Path]) -> None:
    dm = module(
        name="npz",
        train_path=str(npz_factory("train.npz", n=10)),
        test_path=str(npz_factory("test.npz", n=5)),
        batch_size=4,
        eval_batch_size=3,
        num_classes=3,
    )
    batches = list(dm.train_dataloader())
    assert [len(b["sample_id"]) for b in batches] == [4, 4]
    assert len(set(torch.cat([b["sample_id"] for b in batches]).tolist())) == 8
    val = list(dm.val_dataloader())
    assert torch.cat([b["sample_id"] for b in val]).tolist() == [0, 1, 2, 3, 4]


def test_first_batch_order_follows_the_seed() -> None:
    def first(seed: int) -> list[int]:
        return next(iter(module(seed=seed, views=[identity_view()]).train_dataloader()))[
            "sample_id"
        ].tolist()

    assert first(3) == first(3)
    assert first(3) != first(4)


def test_val_and_index_loaders_are_unaugmented_and_ordered() -> None:
    dm = module(views=[ViewConfig()])
    val = next(iter(dm.val_dataloader()))
    assert set(val) == {"image", "label", "sample_id"}
    assert val["image"].shape == (100, 3, 32, 32) and val["sample_id"].tolist() == list(range(100))
    train = next(iter(dm.index_dataloader()))
    torch.testing.assert_close(train["image"], normalised(source_images(dm, train["sample_id"])))
    assert train["sample_id"].tolist() == list(range(100))
    shuffled = next(iter(dm.index_dataloader(shuffle=True)))["sample_id"]
    assert shuffled.tolist() != list(range(100))


def test_gpu_pipeline_crops_lazy_folder_images_per_view(image_tree: Path) -> None:
    dm = module(
        name="imagefolder",
        root=str(image_tree),
        pipeline="gpu",
        batch_size=2,
        num_classes=3,
        views=[ViewConfig(size=24), ViewConfig(size=16)],
        image_size=16,
    )
    batch = next(iter(dm.train_dataloader()))
    assert "image" not in batch and [c.shape for c in batch["crops"]] == [
        (2, 3, 24, 24),
        (2, 3, 16, 16),
    ]
    assert all(c.dtype == torch.uint8 for c in batch["crops"])
    assert next(iter(dm.val_dataloader()))["image"].shape == (2, 3, 16, 16)


def test_auto_pipeline_resolves_by_use_gpu() -> None:
    dm = datamodule_of(DataConfig(pipeline="auto"))
    assert dm.resolved_pipeline == "cpu"
    dm.use_gpu = True
    assert dm.resolved_pipeline == "gpu"
    dm.pipeline = "tpu"
    with pytest.raises(ValueError, match=r"pipeline='tpu' is unknown"):
        _ = dm.resolved_pipeline


def test_accepts_dictconfig() -> None:
    cfg = OmegaConf.structured(DataConfig(num_workers=0, batch_size=8, views=[identity_view(16)]))
    dm = datamodule_of(cfg, 1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["views"][0].shape == (8, 3, 16, 16)


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(ValueError, match=r"data\.views"):
        datamodule_of(DataConfig(views=[]))
    with pytest.raises(ValueError, match=r"data\.pipeline"):
        datamodule_of(DataConfig(pipeline="tpu"))
    with pytest.raises(ValueError, match=r"batch_size=8192 \(data\.batch_size\)") as err:
        module(batch_size=8192).train_dataloader()
    assert "5000" in str(err.value)
    with pytest.raises(ValueError, match=r"data\.num_classes=5"):
        module(num_classes=5)


def test_linear_train_loader_is_augmented_and_shuffled() -> None:
    dm = module(views=[identity_view()])
    batch = next(iter(dm.linear_train_dataloader(32)))
    assert set(batch) == {"image", "label", "sample_id"}
    assert batch["image"].shape == (32, 3, 32, 32) and batch["sample_id"].tolist() != list(
        range(32)
    )
    assert not torch.allclose(batch["image"], normalised(source_images(dm, batch["sample_id"])))
