"""The public API: everything a Lightning user needs, from ``nbr_contrast`` itself, no Hydra."""

from __future__ import annotations

import nbr_contrast

from ..runs import run_python

PUBLIC = [
    "BYOL",
    "CLIM",
    "CO2",
    "MSF",
    "NNCLR",
    "SNCLR",
    "CoNe",
    "MoCoV2",
    "MoCoV3",
    "Supervised",
    "NeighbourIndexCallback",
    "ViewsDataModule",
    "views",
]


def test_every_public_name_is_exported() -> None:
    assert set(PUBLIC) <= set(nbr_contrast.__all__)
    for name in nbr_contrast.__all__:
        assert getattr(nbr_contrast, name) is not None, name


def test_the_plugin_path_imports_no_hydra() -> None:
    script = (
        "import sys\n"
        "from nbr_contrast import NNCLR, NeighbourIndexCallback, ViewsDataModule, views\n"
        "model = NNCLR(proj_hidden_dim=8, pred_hidden_dim=8, proj_output_dim=4, queue_size=8)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'hydra'))\n"
        "print(sorted(m for m in sys.modules if m.startswith('nbr_contrast.app')))\n"
    )
    lines = run_python(["-c", script]).stdout.splitlines()
    assert lines[-2:] == ["[]", "[]"]


def test_every_lazy_name_is_exported() -> None:
    lazy = set(nbr_contrast._WHERE) | set(nbr_contrast._MODULES)
    assert lazy | {"__version__"} == set(nbr_contrast.__all__)
