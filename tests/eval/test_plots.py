from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from nbr_contrast.app.evaluation.curves import curves_figure, plot_curves
from nbr_contrast.app.evaluation.plots import (
    log_figure_to_tensorboard,
    plot_embedding_map,
    plot_neighbour_grid,
    plot_purity,
)

CLASSES = ["cat", "dog", "ship"]


def check_png(path: Path, aspect: float) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1024
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width / height == pytest.approx(aspect, rel=0.02)
    return width, height


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_neighbour_grid(tmp_path: Path, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    queries = torch.rand(3, 3, 16, 16, generator=gen)
    neighbours = torch.rand(3, 4, 3, 16, 16, generator=gen)
    if dtype == torch.uint8:
        queries, neighbours = (queries * 255).to(dtype), (neighbours * 255).to(dtype)
    out = plot_neighbour_grid(
        queries,
        torch.tensor([0, 1, 2]),
        neighbours,
        torch.tensor([[0, 0, 1, 2], [1, 1, 1, 1], [0, 1, 2, 0]]),
        CLASSES,
        tmp_path / "grid" / "neighbours.png",
    )
    assert out == tmp_path / "grid" / "neighbours.png"
    check_png(out, (1.3 * 5) / (1.45 * 3))


def test_neighbour_grid_rejects_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neighbour_images"):
        plot_neighbour_grid(
            torch.rand(2, 3, 8, 8),
            torch.tensor([0, 1]),
            torch.rand(3, 4, 3, 8, 8),
            torch.zeros(2, 4, dtype=torch.long),
            CLASSES,
            tmp_path / "x.png",
        )


METRICS_CSV = """epoch,step,lr-SGD,train/loss_step,train/loss_epoch,val/knn_acc,val/probe_acc1
0,0,0.1,2.30,,,
0,1,0.1,2.10,,,
0,1,,,2.20,31.5,28.0
1,2,0.09,1.90,,,
1,3,0.09,1.70,,,
1,3,,,1.80,45.0,40.5
2,4,0.05,1.50,,,
2,5,,,1.55,52.25,
"""


def test_curves_from_metrics_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(METRICS_CSV)
    check_png(plot_curves(csv_path, tmp_path / "curves.png"), 16.0 / 5.0)
    out = plot_curves(csv_path, tmp_path / "some.png", keys=["val/knn_acc", "missing/acc"])
    check_png(out, 16.0 / 5.0)


NN_ACC_CSV = """epoch,step,train/loss_epoch,train/acc1_epoch,val/knn_acc,val/probe_acc1
0,1,2.20,0.125,31.5,28.0
1,3,1.80,0.25,45.0,40.5
"""


def test_curves_put_every_accuracy_in_percent_and_losses_apart(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(NN_ACC_CSV)
    acc_ax, loss_ax, nbr_ax = curves_figure(csv_path).axes
    acc = {line.get_label(): list(line.get_ydata()) for line in acc_ax.get_lines()}
    assert acc == {
        "train/acc1_epoch": [12.5, 25.0],
        "val/knn_acc": [31.5, 45.0],
        "val/probe_acc1": [28.0, 40.5],
    }
    assert acc_ax.get_ylabel() == "accuracy (%)"
    losses = {line.get_label(): list(line.get_ydata()) for line in loss_ax.get_lines()}
    assert losses == {"train/loss_epoch": [2.2, 1.8]}
    assert loss_ax.get_ylabel() == "loss"
    assert nbr_ax.get_title() == "neighbours" and not nbr_ax.get_lines()  # none logged


NEIGHBOURS_CSV = (
    "epoch,step,train/loss_epoch,train/nbr/agreement_epoch,train/nbr/self_retrieval_epoch,"
    "train/nbr/spread_epoch,train/nbr/age_mean_epoch,train/nbr/agreement_step\n"
    "0,1,2.2,0.20,0.00,0.90,3.0,0.5\n"
    "1,3,1.8,0.30,0.40,0.80,12.0,0.7\n"
)


def test_curves_have_a_neighbours_panel_with_ages_on_their_own_scale(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(NEIGHBOURS_CSV)
    _, _, nbr_ax, age_ax = curves_figure(csv_path).axes
    lines = {line.get_label(): list(line.get_ydata()) for line in nbr_ax.get_lines()}
    assert lines == {
        "agreement": [0.2, 0.3],
        "self_retrieval": [0.0, 0.4],
        "spread": [0.9, 0.8],
    }
    ages = {line.get_label(): list(line.get_ydata()) for line in age_ax.get_lines()}
    assert ages == {"age_mean (steps)": [3.0, 12.0]} and age_ax.get_ylabel() == "age (steps)"
    # one key for both scales, under the axes, so that it covers no curve
    legend = nbr_ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [*lines, "age_mean (steps)"]
    assert age_ax.get_legend() is None
    figure = nbr_ax.get_figure()
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    box, axes = legend.get_window_extent(renderer), nbr_ax.get_window_extent(renderer)
    assert box.y1 < axes.y0


def test_curves_without_usable_metric(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,lr-SGD,val/knn_acc\n0,0,0.1,\n1,1,0.1,\n")
    with pytest.raises(ValueError, match="no usable metric"):
        plot_curves(csv_path, tmp_path / "curves.png")
    with pytest.raises(ValueError, match="no usable metric"):
        plot_curves(csv_path, tmp_path / "curves.png", keys=["train/loss"])


def test_purity_plot(tmp_path: Path) -> None:
    curves = {"trained": {1: 80.0, 10: 70.0, 100: 55.0}, "random": {1: 30.0, 10: 20.0}}
    check_png(plot_purity(curves, tmp_path / "purity.png", chance=10.0), 6.0 / 4.0)
    with pytest.raises(ValueError, match="at least one model"):
        plot_purity({"empty": {}}, tmp_path / "bad.png")


@pytest.mark.parametrize("method", ["pca", "tsne", "auto"])
def test_embedding_map(tmp_path: Path, method: str) -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (120,), generator=gen)
    feats = torch.randn(3, 16, generator=gen)[labels] * 4 + torch.randn(120, 16, generator=gen)
    out = plot_embedding_map(feats, labels, CLASSES, tmp_path / f"{method}.png", method=method)
    check_png(out, 8.0 / 6.0)


def test_embedding_map_rejects_unknown_method(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="umap"):
        plot_embedding_map(torch.randn(10, 4), torch.zeros(10), CLASSES, tmp_path / "m.png", "umap")


class FakeExperiment:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def add_image(self, tag: str, image: np.ndarray, global_step: int, dataformats: str) -> None:
        self.calls.append((tag, image, global_step, dataformats))


def test_log_figure_to_tensorboard(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(METRICS_CSV)
    png = plot_curves(csv_path, tmp_path / "curves.png")
    experiment = FakeExperiment()
    assert log_figure_to_tensorboard(experiment, "plots/curves", png, 7)
    ((tag, image, step, dataformats),) = experiment.calls
    assert (tag, step, dataformats) == ("plots/curves", 7, "HWC")
    assert image.shape == (500, 1600, 3) and image.dtype == np.uint8
    assert not log_figure_to_tensorboard(object(), "plots/curves", png, 7)
