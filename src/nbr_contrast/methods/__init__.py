"""Methods: one LightningModule per paper, sharing :class:`~nbr_contrast.methods.base.BaseMethod`.

``METHOD_CONFIGS`` maps each ``method=<name>`` choice to its structured config; the
config's ``_target_`` names the LightningModule class. Baselines are the same classes with
the neighbour part switched off (``mocov2`` = CO2 with α=0, ``mocov3`` = SNCLR with no
neighbours, ``supervised`` = CoNe with both neighbour weights 0, ``byol`` = MSF with k=1).
"""

from __future__ import annotations

from nbr_contrast.app.config import MethodConfig
from nbr_contrast.methods.clim import CLIMConfig
from nbr_contrast.methods.co2 import CO2Config
from nbr_contrast.methods.cone import CoNeConfig
from nbr_contrast.methods.msf import MSFConfig
from nbr_contrast.methods.nnclr import NNCLRConfig
from nbr_contrast.methods.snclr import SNCLRConfig

METHOD_CONFIGS: dict[str, type[MethodConfig]] = {
    "nnclr": NNCLRConfig,
    "co2": CO2Config,
    "mocov2": CO2Config,
    "snclr": SNCLRConfig,
    "mocov3": SNCLRConfig,
    "clim": CLIMConfig,
    "cone": CoNeConfig,
    "supervised": CoNeConfig,
    "msf": MSFConfig,
    "byol": MSFConfig,
}
