"""WebDataset tar shards as a lazy image source with stable dataset indices.

A sample is the run of consecutive tar members sharing a key (the name up to the first dot
of its file name, as the ``webdataset`` library groups them): an image under ``jpg``,
``jpeg``, ``png`` or ``webp`` and, optionally, its class index under ``cls``. Samples
without an image are passed over. At setup one index pass reads every shard's tar headers
(and ``cls`` members), so the sample count (``num_train``) is known and every sample has
a stable dataset index: its position in the shards as listed (pattern order), counted
across shards. Images are then read on demand by offset, so the shards must be local (or
mounted) uncompressed ``.tar`` files; the training order reads each worker's shards one at
a time (:mod:`nbr_contrast.data.shard_sampler`).
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nbr_contrast.data.image_source import (
    DECODE_ERRORS,
    DataSourceError,
    ImageSource,
    check_on_corrupt,
    to_rgb,
    warn_skipped,
)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
LABEL_KEY = "cls"
META = re.compile(r"__[^/]*__($|/)")  # members the webdataset reader skips


def _webdataset() -> Any:
    """The ``webdataset`` package (an optional extra), imported when shards are used.

    Raises:
        DataSourceError: If it is not installed.
    """
    try:
        import webdataset
    except ImportError as error:
        raise DataSourceError(
            "data=webdataset needs the webdataset package; install it with "
            "pip install 'nbr-contrast[webdataset]'."
        ) from error
    return webdataset


def expand_shards(shards: str | Sequence[str], setting: str = "data.shards") -> list[str]:
    """Shard paths of a brace pattern (``train-{000000..000099}.tar``) or a list of them.

    Raises:
        DataSourceError: If no shard is given, or webdataset is not installed.
    """
    expand_urls = _webdataset().shardlists.expand_urls
    patterns = [shards] if isinstance(shards, str) else [str(s) for s in shards]
    paths = [p for pattern in patterns for p in expand_urls(pattern)]
    if not paths:
        raise DataSourceError(
            f"{setting} is empty; set it to a brace pattern such as "
            "/data/train-{000000..000099}.tar or a list of .tar files."
        )
    return paths


@dataclass
class ShardIndex:
    """Where every sample of a list of shards lies, from one pass over their tar headers.

    Attributes:
        paths: The shard files, in order.
        counts: Samples per shard.
        shard: Shard number of every sample.
        offset: Byte offset of every sample's image in its shard.
        size: Byte size of every sample's image.
        labels: ``cls`` of every sample (``-1`` where it has none).
    """

    paths: list[str]
    counts: list[int] = field(default_factory=list)
    shard: list[int] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def add_shard(self, number: int, setting: str) -> None:
        """Append the samples of shard ``number`` (tar order)."""
        path = self.paths[number]
        try:
            with tarfile.open(path, "r:") as tar:
                samples = _grouped(tar, path, setting)
        except tarfile.TarError as err:
            raise DataSourceError(
                f"{setting}: {path!r} is not an uncompressed tar file ({err}); shards are "
                "read by offset, so write them as plain .tar (not .tar.gz)."
            ) from err
        for offset, size, label in samples:
            self.shard.append(number)
            self.offset.append(offset)
            self.size.append(size)
            self.labels.append(label)
        self.counts.append(len(samples))


def _grouped(tar: tarfile.TarFile, path: str, setting: str) -> list[tuple[int, int, int]]:
    """``(image offset, image size, label)`` of every sample with an image, in tar order."""
    base_plus_ext = _webdataset().tariterators.base_plus_ext
    groups: list[tuple[str, dict[str, tarfile.TarInfo]]] = []
    for member in tar:
        if not member.isreg() or META.match(member.name):
            continue
        key, suffix = base_plus_ext(member.name)
        if key is None:
            continue
        if not groups or groups[-1][0] != key:
            groups.append((key, {}))
        groups[-1][1][suffix.lower()] = member
    samples = []
    for key, members in groups:
        image = next((members[k] for k in IMAGE_KEYS if k in members), None)
        if image is None:
            continue
        label = -1
        if LABEL_KEY in members:
            raw = tar.extractfile(members[LABEL_KEY])
            text = b"" if raw is None else raw.read()
            try:
                label = int(text.decode().strip())
            except (UnicodeDecodeError, ValueError) as err:
                raise DataSourceError(
                    f"{setting}: sample {key!r} of {path!r} has cls {text[:20]!r}, not a class "
                    "index; write cls as a decimal integer counting from 0."
                ) from err
        samples.append((image.offset_data, image.size, label))
    return samples


class ShardSource(ImageSource):
    """The samples of WebDataset tar shards, read on demand by offset.

    Args:
        shards: Brace pattern or list of ``.tar`` files.
        labels: ``True`` (every sample needs ``cls``), ``False`` (labels ignored: ``-1``) or
            ``None`` (``cls`` where a sample has one, ``-1`` elsewhere).
        on_corrupt: ``"fail"`` raises when an image cannot be decoded; ``"skip"`` decodes
            every image once at setup and drops the unreadable ones.
        setting: Config key of ``shards``, named in messages.

    Raises:
        DataSourceError: If a shard is missing or not a plain tar, no sample has an image,
            or ``labels=True`` and a sample lacks ``cls``.
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        labels: bool | None = None,
        on_corrupt: str = "fail",
        setting: str = "data.shards",
    ) -> None:
        check_on_corrupt(on_corrupt)
        self._open: tuple[int, str, int] | None = None  # (pid, path, fd) of the last read
        index = ShardIndex(expand_shards(shards, setting))
        missing = [p for p in index.paths if not Path(p).is_file()]
        if missing:
            raise DataSourceError(
                f"{setting}: {len(missing)} of {len(index.paths)} shard(s) do not exist, e.g. "
                f"{missing[0]!r}; point {setting} at local (or mounted) .tar files."
            )
        for number in range(len(index.paths)):
            index.add_shard(number, setting)
        if not index.shard:
            raise DataSourceError(
                f"{setting}: no sample with an image ({'/'.join(IMAGE_KEYS)}) in the "
                f"{len(index.paths)} shard(s), e.g. {index.paths[0]!r}."
            )
        self.paths = index.paths
        self.shard = np.asarray(index.shard, dtype=np.int64)
        self.offset = np.asarray(index.offset, dtype=np.int64)
        self.size = np.asarray(index.size, dtype=np.int64)
        self.labels = np.asarray(index.labels, dtype=np.int64)
        self._check_labels(labels, setting)
        if on_corrupt == "skip":
            self._drop_unreadable()
        self.counts = np.bincount(self.shard, minlength=len(self.paths)).tolist()
        top = int(self.labels.max())
        self.classes = [str(c) for c in range(top + 1)]

    def _check_labels(self, labels: bool | None, setting: str) -> None:
        if labels is False:
            self.labels[:] = -1
            return
        missing = int((self.labels < 0).sum())
        if labels and missing:
            where = self.paths[int(self.shard[int(np.argmax(self.labels < 0))])]
            fix = (
                "data.labels=true; set data.labels=false to train on them unlabelled."
                if setting == "data.shards"
                else "test shards need one per sample."
            )
            raise DataSourceError(
                f"{setting}: {missing} sample(s) have no cls label (e.g. in {where!r}) but {fix}"
            )

    def _drop_unreadable(self) -> None:
        keep = [i for i in range(len(self.labels)) if _decodable(self.read_bytes(i))]
        warn_skipped(len(self.labels) - len(keep), f"{len(self.paths)} shard(s)")
        if not keep:
            raise DataSourceError(f"data.shards: none of the {len(self.labels)} images decodes.")
        for name in ("shard", "offset", "size", "labels"):
            setattr(self, name, getattr(self, name)[keep])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": None}  # a worker opens its own file

    def read_bytes(self, i: int) -> bytes:
        """The encoded image of sample ``i``, read by offset from its shard."""
        path = self.paths[int(self.shard[i])]
        pid = os.getpid()
        if self._open is None or self._open[:2] != (pid, path):
            if self._open is not None and self._open[0] == pid:
                os.close(self._open[2])
            self._open = (pid, path, os.open(path, os.O_RDONLY))
        return os.pread(self._open[2], int(self.size[i]), int(self.offset[i]))

    def get_image(self, i: int) -> Image.Image:
        """Decode sample ``i``'s image in RGB mode.

        Raises:
            DataSourceError: If it cannot be decoded.
        """
        try:
            with Image.open(BytesIO(self.read_bytes(i))) as img:
                return to_rgb(img)
        except DECODE_ERRORS as err:
            shard = self.paths[int(self.shard[i])]
            raise DataSourceError(
                f"image {i} (in shard {shard!r}) cannot be decoded ({err}); set "
                "data.on_corrupt=skip to drop unreadable images."
            ) from err


def _decodable(data: bytes) -> bool:
    try:
        with Image.open(BytesIO(data)) as img:
            img.load()
    except DECODE_ERRORS:
        return False
    return True


def shard_sources(cfg: Any, on_corrupt: str) -> tuple[ShardSource, ShardSource | None]:
    """``(train, test)`` of ``data=webdataset``: ``data.shards`` and ``data.val_shards``.

    Raises:
        DataSourceError: If ``data.shards`` is unset, or ``data.val_shards`` is set for
            unlabelled training shards.
    """
    if cfg.shards is None:
        raise DataSourceError(
            "data=webdataset needs data.shards: a brace pattern such as "
            "/data/train-{000000..000099}.tar, or a list of .tar files."
        )
    labels = None if cfg.labels is None else bool(cfg.labels)
    train = ShardSource(cfg.shards, labels, on_corrupt)
    if cfg.val_shards is None:
        return train, None
    if not bool((train.labels >= 0).any()):
        raise DataSourceError(
            "data.val_shards evaluates labelled training shards, but these have no cls "
            "labels; give a labelled folder as data.eval_root instead."
        )
    return train, ShardSource(cfg.val_shards, True, on_corrupt, "data.val_shards")
