"""Where the benchmark scripts find full CIFAR-10: the packed-JPEG npz files.

They are looked up in ``$NBR_CONTRAST_DATA_DIR`` (e.g. a copy carried to a GPU host), by
default ``../shared/data`` next to the repository. Without them the scripts fall back to
the built-in subset (``data=cifar10_mini``).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NBR_CONTRAST_DATA_DIR", REPO.parent / "shared" / "data"))
NPZ_TRAIN, NPZ_TEST = "cifar10-jpeg-train.npz", "cifar10-jpeg-test.npz"


def default_data() -> str:
    """``npz`` (full CIFAR-10) when the shared packed-JPEG files exist, else the built-in subset."""
    found = (SHARED_DATA / NPZ_TRAIN).is_file() and (SHARED_DATA / NPZ_TEST).is_file()
    return "npz" if found else "cifar10_mini"


def npz_paths() -> list[str]:
    """The ``data.train_path`` / ``data.test_path`` overrides of the shared npz files."""
    return [
        f"data.train_path={SHARED_DATA / NPZ_TRAIN}",
        f"data.test_path={SHARED_DATA / NPZ_TEST}",
    ]
