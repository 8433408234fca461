"""WebDataset shards: the index pass, labels, errors and the per-rank, per-worker order."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbr_contrast.data.config import DataConfig
from nbr_contrast.data.image_source import DataSourceError
from nbr_contrast.data.shard_sampler import ShardSampler
from nbr_contrast.data.shards import ShardSource, expand_shards
from nbr_contrast.data.sources import build_sources

from .shard_files import encoded, number_of, write_shards


def test_samples_are_numbered_in_shard_order_and_read_back_by_index(tmp_path: Path) -> None:
    pattern = write_shards(tmp_path, [3, 5], keys=("png", "webp", "jpg", "jpeg"))
    source = ShardSource(pattern)
    assert len(source) == 8 and source.counts == [3, 5]
    assert source.labels.tolist() == [n % 3 for n in range(8)] and source.classes == ["0", "1", "2"]
    for i in range(8):
        image = source.get_image(i)
        assert image.mode == "RGB"
        if i % 4 < 2:  # png and webp are lossless
            assert number_of(image) == i
    listed = ShardSource(sorted(str(p) for p in tmp_path.glob("*.tar")))
    assert listed.offset.tolist() == source.offset.tolist()


def test_unlabelled_shards_and_the_labels_setting(tmp_path: Path) -> None:
    unlabelled = write_shards(tmp_path / "u", [4], labelled=False)
    assert ShardSource(unlabelled).labels.tolist() == [-1] * 4
    assert ShardSource(unlabelled).classes == []
    labelled = write_shards(tmp_path / "l", [4])
    assert ShardSource(labelled, labels=False).labels.tolist() == [-1] * 4
    with pytest.raises(DataSourceError, match=r"4 sample\(s\) have no cls label .*labels=false"):
        ShardSource(unlabelled, labels=True)


def test_webdataset_sources_test_on_val_shards_or_eval_root(
    tmp_path: Path, image_tree: Path
) -> None:
    train = write_shards(tmp_path / "train", [4, 4])
    val = write_shards(tmp_path / "val", [3])
    cfg = DataConfig(name="webdataset", shards=train, val_shards=val)
    sources = build_sources(cfg)
    assert len(sources.train) == 8 and sources.test is not None and len(sources.test) == 3
    unlabelled = write_shards(tmp_path / "u", [4], labelled=False)
    cfg = DataConfig(name="webdataset", shards=unlabelled, eval_root=str(image_tree))
    sources = build_sources(cfg)
    assert sources.reference is not None and sources.test is not None
    with pytest.raises(DataSourceError, match=r"data\.val_shards .* data\.eval_root instead"):
        build_sources(DataConfig(name="webdataset", shards=unlabelled, val_shards=val))


def test_bad_shards_fail_with_the_setting_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"data=webdataset needs data\.shards"):
        build_sources(DataConfig(name="webdataset"))
    with pytest.raises(
        DataSourceError, match=r"2 of 2 shard\(s\) do not exist, e.g. '.*missing-000000.tar'"
    ):
        ShardSource(str(tmp_path / "missing-{000000..000001}.tar"))
    pattern = write_shards(tmp_path / "z", [2])
    plain = next((tmp_path / "z").glob("*.tar"))
    packed = tmp_path / "packed.tar.gz"
    with plain.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with pytest.raises(DataSourceError, match=r"not an uncompressed tar file .* plain \.tar"):
        ShardSource(str(packed))
    assert expand_shards(pattern) == [str(plain)]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "s0.cls").write_text("cat")
    (bad / "s0.png").write_bytes(b"")
    shutil.make_archive(str(tmp_path / "badshard"), "tar", bad)
    with pytest.raises(DataSourceError, match=r"has cls b'cat', not a class index"):
        ShardSource(str(tmp_path / "badshard.tar"))


def test_corrupt_images_fail_when_read_or_are_dropped_at_setup(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    for n, data in enumerate([encoded(0, "png"), b"not an image", encoded(2, "png")]):
        (folder / f"s{n}.png").write_bytes(data)
        (folder / f"s{n}.cls").write_text(str(n))
    shutil.make_archive(str(tmp_path / "corrupt"), "tar", folder)
    shard = str(tmp_path / "corrupt.tar")
    with pytest.raises(DataSourceError, match=r"image 1 \(in shard .*\) cannot be decoded"):
        ShardSource(shard).get_image(1)
    with pytest.warns(UserWarning, match=r"skipped 1 corrupt image\(s\)"):
        kept = ShardSource(shard, on_corrupt="skip")
    assert kept.labels.tolist() == [0, 2] and kept.counts == [2]
    assert number_of(kept.get_image(1)) == 2
    with pytest.raises(DataSourceError, match=r"data\.val_shards: 3 sample\(s\) have no cls"):
        ShardSource(write_shards(tmp_path / "u", [3], False), True, setting="data.val_shards")


def _epoch(counts: list[int], ranks: int, workers: int, batch: int, epoch: int) -> list[list[int]]:
    orders = []
    for rank in range(ranks):
        sampler = ShardSampler(range(sum(counts)), batch, 0, ranks, rank, counts, workers)  # type: ignore[arg-type]
        sampler.set_epoch(epoch)
        orders.append([i for i, _ in sampler])
    return orders


def test_each_sample_once_per_epoch_over_ranks_and_workers_reading_whole_shards() -> None:
    counts = [6] * 8  # 8 shards over 2 ranks x 2 workers: 2 shards (12 samples) each
    first = _epoch(counts, 2, 2, 4, 0)
    assert all(len(order) == 24 for order in first)
    assert sorted(first[0] + first[1]) == list(range(48))
    for rank, order in enumerate(first):
        for k in range(6):  # batch k of a rank comes from worker k % 2's two shards
            shards = {i // 6 for i in order[k * 4 : (k + 1) * 4]}
            assert shards <= {rank * 2 + k % 2, rank * 2 + k % 2 + 4}
    second = _epoch(counts, 2, 2, 4, 1)
    assert sorted(second[0] + second[1]) == list(range(48)) and second != first


def test_uneven_shards_give_every_worker_the_same_batches_and_say_so() -> None:
    with pytest.warns(UserWarning, match="each epoch trains on 16 of the 22 samples"):
        orders = _epoch([5, 9, 4, 4], 2, 1, 4, 0)
    assert [len(o) for o in orders] == [8, 8] and not set(orders[0]) & set(orders[1])


def test_too_few_shards_or_samples_for_the_workers_fail_clearly() -> None:
    with pytest.raises(DataSourceError, match=r"3 shard\(s\) cannot feed 2 rank\(s\) × 2 loader"):
        _epoch([4, 4, 4], 2, 2, 2, 0)
    with pytest.raises(DataSourceError, match=r"data\.batch_size=8 is larger than the 4 samples"):
        _epoch([4, 4], 2, 0, 8, 0)


def test_webdataset_is_needed_only_for_shards(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a fresh interpreter without webdataset: the default path imports and builds its data
    code = (
        "import sys; sys.modules['webdataset'] = None\n"
        "from nbr_contrast import api\n"
        "from nbr_contrast.app.build import build_datamodule\n"
        "cfg = api.compose(['data=cifar10_mini', 'data.num_workers=0'], output_dir='run')\n"
        "dm = build_datamodule(cfg); dm.setup('fit'); print(dm.num_train)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 0
    monkeypatch.setitem(sys.modules, "webdataset", None)
    with pytest.raises(DataSourceError, match=r"pip install 'nbr-contrast\[webdataset\]'"):
        expand_shards("/data/train-{0..9}.tar")
