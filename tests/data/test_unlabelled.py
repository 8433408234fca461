"""Unlabelled training data: image folders without classes, STL-10's splits, eval sets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nbr_contrast.app.build import datamodule_of
from nbr_contrast.data.config import DataConfig
from nbr_contrast.data.image_source import DataSourceError
from nbr_contrast.data.sources import build_sources

from .conftest import write_stl10


@pytest.mark.parametrize("nested", [False, True])
def test_a_folder_without_classes_is_unlabelled_with_a_notice(
    unlabelled_tree: Callable[[bool], Path], nested: bool, caplog: pytest.LogCaptureFixture
) -> None:
    root = unlabelled_tree(nested)
    train, test, reference = build_sources(DataConfig(name="imagefolder", root=str(root)))
    assert "without labels" in caplog.text
    assert test is None and reference is None
    assert len(train) == 12 and train.labels.tolist() == [-1] * 12 and train.classes == []
    images = [train.get_image(i) for i in range(12)]
    assert {img.mode for img in images} == {"RGB"}
    assert len({img.size for img in images}) > 1


def test_labels_false_reads_every_image_and_labels_true_needs_the_layout(
    unlabelled_tree: Callable[[bool], Path], image_tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train, test, _ = build_sources(
        DataConfig(name="imagefolder", root=str(image_tree), labels=False)
    )
    assert "without labels" not in caplog.text
    assert len(train) == 8 and test is None and (train.labels == -1).all()
    with pytest.raises(DataSourceError, match=r"data.labels=false"):
        build_sources(DataConfig(name="imagefolder", root=str(unlabelled_tree(True)), labels=True))


def test_eval_root_supplies_the_test_and_reference_sets(
    unlabelled_tree: Callable[[bool], Path], image_tree: Path
) -> None:
    cfg = DataConfig(
        name="imagefolder", root=str(unlabelled_tree(False)), eval_root=str(image_tree)
    )
    train, test, reference = build_sources(cfg)
    assert (train.labels == -1).all()
    assert reference is not None and reference.labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert test is not None and test.labels.tolist() == [0, 1]
    labelled = DataConfig(name="imagefolder", root=str(image_tree), eval_root=str(image_tree))
    with pytest.raises(DataSourceError, match=r"data.eval_root"):
        build_sources(labelled)


def test_datamodule_validates_on_the_reference_then_test_images(
    unlabelled_tree: Callable[[bool], Path], image_tree: Path
) -> None:
    views = DataConfig().views
    for view in views:
        view.size = 16
    cfg = DataConfig(
        name="imagefolder",
        root=str(unlabelled_tree(True)),
        image_size=16,
        views=views,
        num_workers=0,
    )
    dm = datamodule_of(cfg)
    assert not dm.labelled and not dm.monitored and dm.val_dataloader() == []
    dm = datamodule_of(DataConfig(**{**cfg.__dict__, "eval_root": str(image_tree)}))
    assert not dm.labelled and dm.monitored and dm.classes == ["cat", "dog", "fish"]
    reference, test = dm.val_dataloader()
    assert len(reference.dataset) == 6 and len(test.dataset) == 2


@pytest.mark.parametrize(
    ("split", "train_labels", "has_reference"),
    [
        ("train", [0, 1, 2, 3, 4], False),
        ("train+unlabeled", [0, 1, 2, 3, 4, -1, -1, -1], False),
        ("unlabeled", [-1, -1, -1], True),
    ],
)
def test_stl10_splits_from_the_binary_files(
    tmp_path: Path, split: str, train_labels: list[int], has_reference: bool
) -> None:
    root = write_stl10(tmp_path, {"train": 5, "test": 4, "unlabeled": 3})
    train, test, reference = build_sources(DataConfig(name="stl10", root=str(root), split=split))
    assert train.labels.tolist() == train_labels
    assert test is not None and test.labels.tolist() == [0, 1, 2, 3]
    assert (reference is not None) == has_reference
    images = train.as_uint8()
    assert images.shape == (len(train_labels), 96, 96, 3)
    # rows and columns as stored: green holds the column index, red the image's number
    assert (images[:, 7, :, 1] == np.arange(96)).all()
    assert images[-1, 0, 0, 0] == (2 if split != "train" else 4)
    assert train.classes[0] == "airplane"


def test_stl10_unknown_split_and_truncated_file(tmp_path: Path) -> None:
    root = write_stl10(tmp_path, {"train": 2, "test": 2, "unlabeled": 2})
    with pytest.raises(DataSourceError, match=r"data.split"):
        build_sources(DataConfig(name="stl10", root=str(root), split="extra"))
    path = root / "stl10_binary" / "unlabeled_X.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataSourceError, match=r"whole number"):
        build_sources(DataConfig(name="stl10", root=str(root), split="unlabeled"))
