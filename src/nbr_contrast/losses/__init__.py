"""Pure loss functions of tensors for the six methods (no module state, no collectives)."""

from nbr_contrast.losses.clim import clim_mix_loss, cutmix, mixup
from nbr_contrast.losses.co2 import co2_consistency, moco_infonce
from nbr_contrast.losses.cone import cone_dc_loss, cone_dc_target, cone_neighbour_loss
from nbr_contrast.losses.infonce import info_nce, moco_logits
from nbr_contrast.losses.msf import msf_loss, msf_neighbours
from nbr_contrast.losses.nnclr import nnclr_loss
from nbr_contrast.losses.snclr import snclr_loss, snclr_weights

__all__ = [
    "clim_mix_loss",
    "co2_consistency",
    "cone_dc_loss",
    "cone_dc_target",
    "cone_neighbour_loss",
    "cutmix",
    "info_nce",
    "mixup",
    "moco_infonce",
    "moco_logits",
    "msf_loss",
    "msf_neighbours",
    "nnclr_loss",
    "snclr_loss",
    "snclr_weights",
]
