"""nbr_contrast: neighbour-based contrastive learning methods for PyTorch Lightning.

The library a Lightning user puts into their own ``Trainer``::

    import lightning as L
    from nbr_contrast import NNCLR, NeighbourIndexCallback, ViewsDataModule

    model = NNCLR(backbone=my_resnet, num_classes=10)  # NNCLR's recipe, your backbone
    data = ViewsDataModule(my_train_set, my_test_set, views=NNCLR.view_recipe)
    L.Trainer(callbacks=[NeighbourIndexCallback()]).fit(model, datamodule=data)

Each public name is imported when it is first used, so ``import nbr_contrast.losses`` (or
the plain-PyTorch parts: banks, search, losses) does not import Lightning. The Hydra command
line (``python -m nbr_contrast``) builds these same classes from ``conf/``;
``nbr_contrast.api`` is its notebook face (with Hydra).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nbr_contrast.version import __version__

if TYPE_CHECKING:
    from nbr_contrast import losses, views
    from nbr_contrast.data.config import ViewConfig
    from nbr_contrast.data.datamodule import ViewsDataModule
    from nbr_contrast.data.dataset_source import ViewsDataset
    from nbr_contrast.data.images import Images
    from nbr_contrast.methods import (
        BYOL,
        CLIM,
        CO2,
        MSF,
        NNCLR,
        SNCLR,
        BaseMethod,
        CoNe,
        MoCoV2,
        MoCoV3,
        MomentumMethod,
        Supervised,
    )
    from nbr_contrast.methods.optimisation import OptimConfig
    from nbr_contrast.models.backbone_config import BackboneConfig
    from nbr_contrast.neighbours.bank import NeighbourBank, PayloadSpec
    from nbr_contrast.neighbours.callback import NeighbourIndexCallback

_WHERE = {
    **dict.fromkeys(
        (
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
        ),
        "nbr_contrast.methods",
    ),
    "NeighbourIndexCallback": "nbr_contrast.neighbours.callback",
    "NeighbourBank": "nbr_contrast.neighbours.bank",
    "PayloadSpec": "nbr_contrast.neighbours.bank",
    "ViewsDataModule": "nbr_contrast.data.datamodule",
    "ViewsDataset": "nbr_contrast.data.dataset_source",
    "Images": "nbr_contrast.data.images",
    "ViewConfig": "nbr_contrast.data.config",
    "OptimConfig": "nbr_contrast.methods.optimisation",
    "BackboneConfig": "nbr_contrast.models.backbone_config",
}
_MODULES = {"losses": "nbr_contrast.losses", "views": "nbr_contrast.views"}

__all__ = [
    "BYOL",
    "CLIM",
    "CO2",
    "MSF",
    "NNCLR",
    "SNCLR",
    "BackboneConfig",
    "BaseMethod",
    "CoNe",
    "Images",
    "MoCoV2",
    "MoCoV3",
    "MomentumMethod",
    "NeighbourBank",
    "NeighbourIndexCallback",
    "OptimConfig",
    "PayloadSpec",
    "Supervised",
    "ViewConfig",
    "ViewsDataModule",
    "ViewsDataset",
    "__version__",
    "losses",
    "views",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (``api``: the Hydra application's notebook face)."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name == "api":
        return importlib.import_module("nbr_contrast.app.api")
    else:
        raise AttributeError(f"module 'nbr_contrast' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
