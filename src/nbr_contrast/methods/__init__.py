"""Methods: one LightningModule per paper, sharing :class:`~nbr_contrast.methods.base.BaseMethod`.

Each baseline is its method's class with the neighbour part switched off, as a subclass
that fixes the switch: :class:`~nbr_contrast.methods.co2.MoCoV2` is CO2 with α = 0 (also
CLIM's baseline), :class:`~nbr_contrast.methods.snclr.MoCoV3` SNCLR with no neighbours,
:class:`~nbr_contrast.methods.cone.Supervised` CoNe with both neighbour weights 0,
:class:`~nbr_contrast.methods.msf.BYOL` MSF with k = 1; NNCLR's is ``NNCLR(use_nn=False)``.
"""

from __future__ import annotations

from nbr_contrast.methods.base import BaseMethod
from nbr_contrast.methods.clim import CLIM
from nbr_contrast.methods.co2 import CO2, MoCoV2
from nbr_contrast.methods.cone import CoNe, Supervised
from nbr_contrast.methods.momentum import MomentumMethod
from nbr_contrast.methods.msf import BYOL, MSF
from nbr_contrast.methods.nnclr import NNCLR
from nbr_contrast.methods.snclr import SNCLR, MoCoV3

__all__ = [
    "BYOL",
    "CLIM",
    "CO2",
    "MSF",
    "NNCLR",
    "SNCLR",
    "BaseMethod",
    "CoNe",
    "MoCoV2",
    "MoCoV3",
    "MomentumMethod",
    "Supervised",
]
