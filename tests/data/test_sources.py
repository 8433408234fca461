"""Image sources: packaged subset, npz archives, torchvision errors, image folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nbr_contrast.data.config import DataConfig
from nbr_contrast.data.folders import FolderSource
from nbr_contrast.data.image_source import ArraySource, DataSourceError
from nbr_contrast.data.sources import SOURCE_NAMES, build_sources, load_npz, mini_source


@pytest.mark.parametrize(("split", "n", "per_class"), [("train", 5000, 500), ("test", 1000, 100)])
def test_mini_assets_are_balanced_cifar(split: str, n: int, per_class: int) -> None:
    source = mini_source(split)
    images = source.as_uint8()
    assert len(source) == n
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    assert source.labels.dtype == np.int64
    assert np.bincount(source.labels).tolist() == [per_class] * 10
    assert source.classes[:3] == ["airplane", "automobile", "bird"] and len(source.classes) == 10
    image = source.get_image(7)
    assert image.mode == "RGB" and image.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(image), images[7])


def test_build_sources_mini() -> None:
    train, test, _ = build_sources(DataConfig(name="cifar10_mini"))
    assert (len(train), len(test)) == (5000, 1000)


def test_array_source_checks_shapes() -> None:
    with pytest.raises(DataSourceError, match="uint8"):
        ArraySource(np.zeros((2, 4, 4), dtype=np.uint8), [0, 1], ["a", "b"])
    with pytest.raises(DataSourceError, match="labels"):
        ArraySource(np.zeros((2, 4, 4, 3), dtype=np.uint8), [0], ["a", "b"])


def test_npz_roundtrip(npz_factory: Callable[..., Path]) -> None:
    source = load_npz(npz_factory(n=6))
    assert len(source) == 6
    assert source.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert source.classes == ["a", "b", "c"]
    assert source.as_uint8().shape == (6, 32, 32, 3)


@pytest.mark.parametrize("setting", ["data.train_path", "data.test_path"])
def test_missing_npz_names_the_setting(
    npz_factory: Callable[..., Path], tmp_path: Path, setting: str
) -> None:
    paths = {"data.train_path": str(npz_factory()), "data.test_path": str(npz_factory("t.npz"))}
    paths[setting] = str(tmp_path / "nope.npz")
    cfg = DataConfig(
        name="npz", train_path=paths["data.train_path"], test_path=paths["data.test_path"]
    )
    with pytest.raises(DataSourceError, match=setting) as err:
        build_sources(cfg)
    assert "nope.npz" in str(err.value)


def test_unset_npz_path_names_the_setting(npz_factory: Callable[..., Path]) -> None:
    with pytest.raises(DataSourceError, match=r"data.test_path"):
        build_sources(DataConfig(name="npz", train_path=str(npz_factory())))


def test_corrupt_image_fails_naming_index_path_and_setting(
    npz_factory: Callable[..., Path],
) -> None:
    path = npz_factory(corrupt=[4])
    with pytest.raises(DataSourceError, match=r"data.on_corrupt=skip") as err:
        load_npz(path, on_corrupt="fail")
    assert "image 4" in str(err.value) and str(path) in str(err.value)


def test_corrupt_image_skipped_keeps_labels_aligned(npz_factory: Callable[..., Path]) -> None:
    clean = load_npz(npz_factory("clean.npz", n=12))
    with pytest.warns(UserWarning, match="skipped 2 corrupt"):
        source = load_npz(npz_factory("clean.npz", n=12, corrupt=[1, 5]), on_corrupt="skip")
    kept = [i for i in range(12) if i not in (1, 5)]
    assert len(source) == 10
    assert source.labels.tolist() == [i % 3 for i in kept]
    np.testing.assert_array_equal(source.as_uint8(), clean.as_uint8()[kept])


def test_invalid_on_corrupt(npz_factory: Callable[..., Path]) -> None:
    with pytest.raises(DataSourceError, match=r"data.on_corrupt"):
        load_npz(npz_factory(), on_corrupt="ignore")


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("stl10", "stl10_binary"),
    ],
)
def test_missing_torchvision_root_is_one_clear_error(
    tmp_path: Path, name: str, folder: str
) -> None:
    with pytest.raises(DataSourceError) as err:
        build_sources(DataConfig(name=name, root=str(tmp_path), download=False))
    message = str(err.value)
    assert f"data.root={str(tmp_path)!r}" in message
    assert "data.download=true" in message and folder in message


def test_torchvision_without_root_names_data_root() -> None:
    with pytest.raises(DataSourceError, match=r"data.root"):
        build_sources(DataConfig(name="cifar10", root=None))


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DataSourceError, match=r"data.name") as err:
        build_sources(DataConfig(name="imagenet"))
    assert all(n in str(err.value) for n in SOURCE_NAMES)


def test_imagefolder_converts_modes_and_sorts_classes(image_tree: Path) -> None:
    train, test, _ = build_sources(DataConfig(name="imagefolder", root=str(image_tree)))
    assert train.classes == ["cat", "dog", "fish"] and test.classes == train.classes
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert test.labels.tolist() == [0, 1]
    assert train.as_uint8() is None
    images = [train.get_image(i) for i in range(len(train))] + [test.get_image(1)]
    assert all(img.mode == "RGB" for img in images)
    gray = np.asarray(images[1])
    assert gray.shape == (20, 20, 3) and (gray == 77).all()
    assert np.asarray(images[2])[0, 0].tolist() == [10, 200, 30]
    assert images[0].size == (40, 30)


def test_imagefolder_class_list_restricts_and_orders(image_tree: Path) -> None:
    cfg = DataConfig(
        name="imagefolder", root=str(image_tree), class_list=str(image_tree / "classes.txt")
    )
    train, test, _ = build_sources(cfg)
    assert train.classes == ["dog", "cat"]
    assert train.labels.tolist() == [0, 0, 1, 1, 1]
    assert test.labels.tolist() == [0, 1]


def test_imagefolder_class_list_with_unknown_class(image_tree: Path) -> None:
    listing = image_tree / "bad.txt"
    listing.write_text("cat\nzebra\n")
    cfg = DataConfig(name="imagefolder", root=str(image_tree), class_list=str(listing))
    with pytest.raises(DataSourceError, match=r"data.class_list"):
        build_sources(cfg)


def test_imagefolder_requires_split_folders(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataSourceError, match=r"data.root") as err:
        build_sources(DataConfig(name="imagefolder", root=str(tmp_path)))
    assert "train/" in str(err.value) and "val/" in str(err.value)


def test_imagefolder_missing_root_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"data.root"):
        build_sources(DataConfig(name="imagefolder", root=None))
    with pytest.raises(DataSourceError, match=r"data.root"):
        FolderSource(tmp_path / "missing")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataSourceError, match=r"data.root"):
        FolderSource(tmp_path / "empty")


def test_folder_corrupt_file_fail_and_skip(image_tree: Path) -> None:
    (image_tree / "train" / "dog" / "broken.png").write_bytes(b"garbage")
    failing = FolderSource(image_tree / "train")
    broken = next(i for i, p in enumerate(failing.paths) if p.name == "broken.png")
    with pytest.raises(DataSourceError, match=r"data.on_corrupt=skip") as err:
        failing.get_image(broken)
    assert "broken.png" in str(err.value)
    with pytest.warns(UserWarning, match="skipped 1 corrupt"):
        skipping = FolderSource(image_tree / "train", on_corrupt="skip")
    assert len(skipping) == len(failing) - 1
    assert skipping.labels.tolist() == [0, 0, 0, 1, 1, 2]
