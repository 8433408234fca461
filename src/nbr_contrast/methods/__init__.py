"""Methods: one LightningModule per paper, sharing :class:`~nbr_contrast.methods.base.BaseMethod`."""

from __future__ import annotations

from nbr_contrast.config import MethodConfig

METHOD_CONFIGS: dict[str, type[MethodConfig]] = {}
