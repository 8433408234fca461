"""``data.train_list``: an image folder's training images given by a list file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from nbr_contrast import api
from nbr_contrast.data.config import DataConfig
from nbr_contrast.data.image_source import DataSourceError
from nbr_contrast.data.sources import build_sources

from ..runs import PX16, SMALL_NNCLR


def test_a_labelled_list_with_relative_and_absolute_paths(image_tree: Path) -> None:
    listing = image_tree / "lists" / "train.txt"
    listing.parent.mkdir()
    absolute = image_tree / "train" / "fish" / "a.png"
    listing.write_text(f"../train/dog/a.png\tdog\n\n{absolute}\tfish\n../train/cat/b.png\tcat\n")
    cfg = DataConfig(name="imagefolder", train_list=str(listing), root=str(image_tree))
    train, test, reference = build_sources(cfg)
    assert train.classes == ["cat", "dog", "fish"] and train.labels.tolist() == [1, 2, 0]
    assert np.asarray(train.get_image(2)).tolist()[0][0] == [77, 77, 77]  # the L image
    assert test is not None and reference is None
    assert test.classes == train.classes and test.labels.tolist() == [0, 1]  # val/cat, val/dog


def test_an_unlabelled_list_is_evaluated_on_eval_root(image_tree: Path, tmp_path: Path) -> None:
    listing = tmp_path / "all.txt"
    listing.write_text("".join(f"{p}\n" for p in sorted((image_tree / "train").rglob("*.png"))))
    cfg = DataConfig(name="imagefolder", train_list=str(listing), eval_root=str(image_tree))
    train, test, reference = build_sources(cfg)
    assert len(train) == 5 and (train.labels == -1).all() and train.classes == []
    assert test is not None and reference is not None


def test_numeric_class_names_sort_as_numbers_and_class_list_names_the_classes(
    image_tree: Path, tmp_path: Path
) -> None:
    image = image_tree / "train" / "dog" / "a.png"
    listing = tmp_path / "n.txt"
    listing.write_text(f"{image}\t10\n{image}\t2\n")
    train, _, _ = build_sources(DataConfig(name="imagefolder", train_list=str(listing)))
    assert train.classes == ["2", "10"] and train.labels.tolist() == [1, 0]
    named = tmp_path / "named.txt"
    named.write_text(f"{image}\tdog\n{image}\towl\n")
    cfg = DataConfig(
        name="imagefolder", train_list=str(named), class_list=str(image_tree / "classes.txt")
    )
    with pytest.raises(DataSourceError, match=r"1 class\(es\) that data\.class_list=.*\['owl'\]"):
        build_sources(cfg)


def test_a_bad_path_fails_with_one_line_naming_the_line_and_the_fix(tmp_path: Path) -> None:
    listing = tmp_path / "train.txt"
    listing.write_text("gone/a.png\ngone/b.png\n")
    with pytest.raises(DataSourceError) as err:
        build_sources(DataConfig(name="imagefolder", train_list=str(listing)))
    message = str(err.value)
    assert "\n" not in message
    assert f"data.train_list={str(listing)!r} line 1: image " in message
    assert str(tmp_path / "gone" / "a.png") in message
    assert "(2 of 2 listed images missing); paths are relative to the list file's" in message
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(DataSourceError, match=r"data\.train_list=.* lists no image"):
        build_sources(DataConfig(name="imagefolder", train_list=str(empty)))


def test_a_byte_order_mark_is_dropped(image_tree: Path, tmp_path: Path) -> None:
    listing = tmp_path / "bom.txt"
    listing.write_bytes(("\ufeff" + f"{image_tree / 'train' / 'dog' / 'a.png'}\tdog\n").encode())
    train, _, _ = build_sources(DataConfig(name="imagefolder", train_list=str(listing)))
    assert train.classes == ["dog"] and len(train) == 1


def test_a_line_with_an_extra_field_or_a_file_that_is_not_text_fails_in_one_line(
    image_tree: Path, tmp_path: Path
) -> None:
    listing = tmp_path / "three.txt"
    image = image_tree / "train" / "dog" / "a.png"
    listing.write_text(f"{image}\tdog\n{image}\tdog\tnote\n")
    with pytest.raises(DataSourceError, match=r"line 2 has 3 tab-separated fields; a line is"):
        build_sources(DataConfig(name="imagefolder", train_list=str(listing)))
    with pytest.raises(DataSourceError, match=r"\.png' is not a text file \(byte \d+ is not UTF"):
        build_sources(DataConfig(name="imagefolder", train_list=str(image)))


def test_nnclr_trains_from_a_list(
    tiny_cfg: Callable[..., DictConfig], unlabelled_tree: Callable[[bool], Path]
) -> None:
    root = unlabelled_tree(True)
    listing = root / "list.txt"
    listing.write_text("".join(f"{p.relative_to(root)}\n" for p in sorted(root.rglob("*.png"))))
    cfg: DictConfig = tiny_cfg(
        *PX16, *SMALL_NNCLR, "data=imagefolder", f"data.train_list={listing}",
        "data.batch_size=4", "data.num_classes=3", "knn_report=false",
    )  # fmt: skip
    assert api.fit(cfg)["steps"] == 2
