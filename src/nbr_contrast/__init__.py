"""nbr_contrast: neighbour-based contrastive learning methods for PyTorch Lightning."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``nbr_contrast.api``: the notebook face of the Hydra application, imported on first use."""
    if name == "api":
        return importlib.import_module("nbr_contrast.app.api")
    raise AttributeError(f"module 'nbr_contrast' has no attribute {name!r}")
