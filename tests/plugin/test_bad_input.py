"""Bad input on the plugin path: one clear line naming the problem and the fix.

Wrong argument types and values, a backbone whose output is not a feature vector or that
still ends in its classifier, a dataset whose items are not images, batches that do not
follow the batch contract, a datamodule without what a method needs, views a name-built
backbone was not built for, a checkpoint of another method or of an older release.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nbr_contrast import CLIM, NNCLR, CoNe, MoCoV2, NeighbourIndexCallback, ViewsDataModule

from .user_code import TinyCIFAR, resnet18

SMALL = {"proj_hidden_dim": 16, "pred_hidden_dim": 16, "proj_output_dim": 8, "queue_size": 32}
MOCO = {"proj_hidden_dim": 16, "proj_output_dim": 8, "queue_size": 32}


def fit(model: L.LightningModule, data: L.LightningDataModule | None = None, **loaders: Any):
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        callbacks=[NeighbourIndexCallback()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, datamodule=data, **loaders)
    return trainer


def one_line(error: pytest.ExceptionInfo[BaseException]) -> None:
    assert "\n" not in str(error.value).strip(), str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"temperature": 0.0}, r"NNCLR\(temperature=0.0\): temperature must be > 0"),
        ({"queue_size": -5}, r"NNCLR\(queue_size=-5\): queue_size must be positive"),
        ({"temperature": float("nan")}, r"temperature=nan.*not a finite number"),
        ({"knn_k": 0}, r"knn_k=0\): knn_k must be at least 1"),
        ({"num_classes": 0}, r"num_classes=0\): num_classes must be at least 1"),
        ({"optim": {"lr": -1.0}}, r"optim.lr=-1.0 must be positive"),
        ({"optim": {"name": "adam"}}, r"optim.name='adam' is unknown; valid: sgd, lars, adamw"),
        ({"optim": {"learning_rate": 1.0}}, r"optim has unknown key\(s\) \['learning_rate'\]"),
        ({"backbone": "resnet19"}, r"backbone.name='resnet19'.*resnet18"),
        ({"backbone": {"nme": "resnet18"}}, r"backbone has unknown key\(s\) \['nme'\]"),
    ],
)
def test_a_bad_value_is_one_line(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as error:
        NNCLR(**{**SMALL, **kwargs})
    one_line(error)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"temperature": "hot"}, r"NNCLR\(temperature='hot'\): temperature must be a number"),
        ({"backbone": 3}, r"backbone=int: pass an nn.Module, a name such as 'resnet18'"),
        ({"optim": 0.3}, r"optim=float: pass an OptimConfig or a mapping"),
    ],
)
def test_a_wrong_type_is_one_line(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(TypeError, match=pattern) as error:
        NNCLR(**{**SMALL, **kwargs})
    one_line(error)


def test_a_baseline_refuses_its_switch() -> None:
    with pytest.raises(ValueError, match=r"MoCoV2 is CO2 with alpha=0.0; for alpha=1.0 use CO2"):
        MoCoV2(alpha=1.0)
    assert MoCoV2(backbone=resnet18(), alpha=0.0, **MOCO).alpha == 0.0


def test_cone_needs_the_number_of_classes() -> None:
    with pytest.raises(ValueError, match=r"num_classes must be the number of classes \(CoNe"):
        CoNe(backbone=resnet18())


class Pixels(nn.Module):
    """Not a feature extractor: returns a tuple."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,)


def test_a_backbone_must_give_features() -> None:
    classifier = r"still ends in its classifier \(fc, 1000 outputs\); set backbone.fc = nn"
    with pytest.raises(ValueError, match=classifier):
        NNCLR(backbone=torchvision.models.resnet18(), **SMALL)
    with pytest.raises(ValueError, match=r"backbone Pixels must map images \[B, 3, H, W\] to"):
        NNCLR(backbone=Pixels(), **SMALL)


class Floats(Dataset):
    """A dataset that already applies a tensor transform: float images."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.rand(3, 16, 16), 0


def test_a_dataset_of_non_images_is_named() -> None:
    floats = r"item 0 of the train dataset is a Tensor torch.float32 \(3, 16, 16\), not an image"
    with pytest.raises(TypeError, match=floats + r".*without its tensor transform"):
        ViewsDataModule(Floats())


def test_views_must_be_a_recipe_or_a_view_list() -> None:
    recipes = r"views='simclr' is not a view recipe; valid: byol, clim, mocov2, msf, supervised"
    with pytest.raises(ValueError, match=recipes):
        ViewsDataModule(TinyCIFAR("train", every=50), views="simclr")
    with pytest.raises(ValueError, match=r"views: unknown key\(s\) \['sise'\]"):
        ViewsDataModule(TinyCIFAR("train", every=50), views=[{"sise": 32}])
    with pytest.raises(ValueError, match=r"pipeline='tpu' is unknown"):
        ViewsDataModule(TinyCIFAR("train", every=50), pipeline="tpu")


def test_a_batch_outside_the_contract_is_named() -> None:
    pairs = DataLoader([(torch.rand(3, 16, 16), 0)] * 8, batch_size=4)
    contract = r"NNCLR got a training batch list; a batch must be a dict .*ViewsDataset"
    with pytest.raises(TypeError, match=contract):
        fit(NNCLR(backbone=resnet18(), **SMALL), train_dataloaders=pairs)


class Plain(L.LightningDataModule):
    """A datamodule of the user's without what CLIM needs."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader([], batch_size=2)


def test_clim_names_what_a_foreign_datamodule_lacks() -> None:
    missing = (
        r"CLIM needs a datamodule with enable_neighbour_serving, set_neighbour_table, "
        r"serving_neighbours for its mixtures of neighbours, and the Trainer has Plain: pass "
        r"nbr_contrast.ViewsDataModule"
    )
    with pytest.raises(TypeError, match=missing):
        fit(CLIM(backbone=resnet18(), **MOCO), Plain())


def test_views_the_backbone_was_not_built_for() -> None:
    big = [{"size": 96}, {"size": 96}]
    data = ViewsDataModule(TinyCIFAR("train", every=50), views=big, batch_size=4, num_workers=0)
    mismatch = (
        r"NNCLR's backbone 'resnet18' was built for 32 px images but the views are 96 px; "
        r"build it for them: backbone=BackboneConfig\(name='resnet18', image_size=96\)"
    )
    with pytest.raises(ValueError, match=mismatch):
        fit(NNCLR(**SMALL), data)


def test_a_checkpoint_of_another_method_or_release(tmp_path: Path) -> None:
    data = ViewsDataModule(TinyCIFAR("train", every=50), batch_size=4, num_workers=0)
    trainer = fit(NNCLR(backbone="resnet18", **SMALL), data)
    path = tmp_path / "nnclr.ckpt"
    trainer.save_checkpoint(path)
    assert NNCLR.load_from_checkpoint(path).queue_size == 32
    other = r"was written by nbr_contrast.methods.nnclr.NNCLR, not CoNe: load it with NNCLR"
    with pytest.raises(ValueError, match=other) as error:
        CoNe.load_from_checkpoint(path)
    one_line(error)
    old = torch.load(path, map_location="cpu", weights_only=False)
    old.pop("nbr_contrast_method")
    old["hyper_parameters"] = {"cfg": {"method": {"name": "nnclr"}}}
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match=r"written before nbr_contrast 0.2.*nbr_contrast.api.load"):
        NNCLR.load_from_checkpoint(tmp_path / "old.ckpt")
