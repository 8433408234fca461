from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from nbr_contrast.data.config import ViewConfig
from nbr_contrast.methods.clim import centre_wise_selection
from nbr_contrast.neighbours.dataset_graph import DatasetGraph

from .helpers import fit_small


def toy_index() -> DatasetGraph:
    """Two clusters on a line; closeness to the centroid is given by hand.

    cluster 0: images 0,1,2 with centroid similarity 0.9, 0.5, 0.7
    cluster 1: images 3,4   with centroid similarity 0.6, 0.8
    """
    index = DatasetGraph.__new__(DatasetGraph)
    index.knn_ids = torch.tensor([[1, 2], [2, 0], [0, 3], [4, 2], [3, 0]])
    index.cluster = torch.tensor([0, 0, 0, 1, 1])
    index.centroid_sim = torch.tensor([0.9, 0.5, 0.7, 0.6, 0.8])
    return index


def test_centre_wise_selection_on_toy_geometry() -> None:
    table, counts = centre_wise_selection(toy_index())
    # 0 is the closest to its centroid: nothing qualifies -> fallback to itself
    assert counts.tolist() == [0, 2, 1, 1, 0]
    assert table[0].tolist() == [0, -1]
    # 1 (0.5): neighbours 2 (0.7) and 0 (0.9) in its cluster, both closer
    assert sorted(table[1].tolist()) == [0, 2]
    # 2 (0.7): 0 qualifies, 3 is in the other cluster
    assert table[2].tolist() == [0, -1]
    # 3 (0.6): 4 (0.8) qualifies, 2 is in the other cluster
    assert table[3].tolist() == [4, -1]
    assert table[4].tolist() == [4, -1]


SMALL = [
    "method=clim",
    "method.proj_hidden_dim=64",
    "method.proj_output_dim=32",
    "method.queue_size=64",
    "method.knn_k=10",
    "method.n_clusters=4",
    "method.k=3",
    "method.warmup_epochs=1",
    "method.refresh_every=1",
    "trainer.max_epochs=2",
    "optim=sgd",
]


def test_mixing_starts_after_warmup_with_served_neighbours(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    method, trainer = fit_small(tiny_cfg(*SMALL))
    metrics = trainer.callback_metrics
    assert "train/l_mix_epoch" in metrics
    index = method.neighbours.dataset_graph
    assert index is not None and index.epoch == 1
    assert index.knn_ids.shape == (5000, 3)
    assert 0.0 <= float(metrics["clim/selected_fraction"]) <= 1.0
    datamodule = trainer.datamodule
    table, counts = centre_wise_selection(index)
    assert torch.equal(datamodule.neighbour_table, table.cpu())
    assert torch.equal(datamodule.neighbour_counts, counts.cpu())


def test_no_mixing_before_warmup(tiny_cfg: Callable[..., DictConfig]) -> None:
    _, trainer = fit_small(tiny_cfg(*SMALL, "trainer.max_epochs=1"))
    assert "train/l_mix_epoch" not in trainer.callback_metrics


def test_multi_resolution_views(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg(*SMALL, "trainer.max_epochs=1")
    cfg.data.views.append(ViewConfig(size=16))
    _, trainer = fit_small(cfg)
    assert "train/l_multires_epoch" in trainer.callback_metrics
