"""Which method and release wrote a checkpoint, so loading it into another fails in one line.

Every checkpoint a method saves names its class and the package version under
:data:`METHOD_KEY`. ``NNCLR.load_from_checkpoint(path)`` on a CoNe checkpoint would fail deep
inside a constructor (an unexpected argument) or, worse, load a look-alike; a checkpoint of
a release whose methods took the whole run config cannot be rebuilt from its
hyper-parameters at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nbr_contrast.version import __version__

METHOD_KEY = "nbr_contrast_method"
"""Checkpoint key naming the method's class and the package version that wrote it."""


def class_path(cls: type) -> str:
    """``module.Class`` of ``cls``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def method_record(cls: type) -> dict[str, str]:
    """What a checkpoint records under :data:`METHOD_KEY`."""
    return {"class": class_path(cls), "version": __version__}


def check_checkpoint_class(cls: type, path: Any) -> None:
    """Refuse a checkpoint file that ``cls`` did not write, naming the class that did.

    Args:
        cls: The class ``load_from_checkpoint`` was called on.
        path: The checkpoint (anything but a local file passes unchecked).

    Raises:
        ValueError: When another class wrote it, or a release before the methods' keyword
            constructors (whose checkpoints hold the whole run config instead).
    """
    if not isinstance(path, str | Path) or not Path(path).is_file():
        return
    saved = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    record = saved.get(METHOD_KEY) if isinstance(saved, dict) else None
    if record is None:
        if "cfg" in (saved.get("hyper_parameters") or {}):
            raise ValueError(
                f"{path} was written before nbr_contrast 0.2, whose methods took the whole run "
                "config: load it with nbr_contrast.api.load(path), which rebuilds the method "
                "from that config."
            )
        return
    if record["class"] != class_path(cls):
        name = record["class"].rsplit(".", 1)[-1]
        raise ValueError(
            f"{path} was written by {record['class']}, not {cls.__name__}: load it with "
            f"{name}.load_from_checkpoint(path) (nbr_contrast {record['version']})."
        )
