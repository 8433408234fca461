"""The notebook API end to end: compose → fit → evaluate, pictures and neighbour helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from nbr_contrast import api
from nbr_contrast.app.evaluation.report import SplitFeatures

from .runs import SMALL_NNCLR, TINY

SMALL = [*TINY, *SMALL_NNCLR]


@pytest.fixture(scope="module")
def small_data(mini_npz: Callable[[int, int], list[str]]) -> list[str]:
    """Overrides selecting 200 train / 100 test built-in images (20 and 10 per class)."""
    return mini_npz(25, 10)


@pytest.fixture(scope="module")
def fitted(small_data: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Summary of one tiny run with pictures on, through the API."""
    run = tmp_path_factory.mktemp("api_run") / "run"
    cfg = api.compose([*SMALL, *small_data, "plots=true"], output_dir=run)
    return api.fit(cfg)


def test_fit_writes_summary_checkpoint_and_pictures(fitted: dict[str, object]) -> None:
    run = Path(str(fitted["output_dir"]))
    assert Path(str(fitted["checkpoint"])).is_file()
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["checkpoint"] == fitted["checkpoint"]
    assert 0.0 <= float(on_disk["knn_acc_after@5"]) <= 100.0
    plots = {Path(p).name: Path(p) for p in on_disk["plots"]}
    assert set(plots) == {"neighbours.png", "embedding_map.png", "curves.png"}
    for path in plots.values():
        assert path.parent == run / "plots"
        assert path.stat().st_size > 1024
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_evaluate_knn_matches_the_fit_summary(
    fitted: dict[str, object], small_data: list[str], tmp_path: Path
) -> None:
    result = api.evaluate(
        str(fitted["checkpoint"]),
        "knn",
        [*small_data, "task.k=[1,5]", "task.temperature=[0.07,0.1]", "data.num_workers=0"],
        output_dir=tmp_path / "knn",
    )
    assert set(result["accuracy"]) == {"0.07", "0.1"}
    assert all(set(by_k) == {"1", "5"} for by_k in result["accuracy"].values())
    assert json.loads((tmp_path / "knn" / "knn.json").read_text()) == result
    # The run's final kNN uses the same features and classifier (k=5, temperature 0.1).
    assert result["accuracy"]["0.1"]["5"] == pytest.approx(fitted["knn_acc_after@5"])


def test_evaluate_export_writes_a_loadable_backbone(
    fitted: dict[str, object], tmp_path: Path
) -> None:
    result = api.evaluate(
        str(fitted["checkpoint"]),
        "export",
        overrides=["task.projector=true"],
        output_dir=tmp_path / "export",
    )
    state = torch.load(result["path"], map_location="cpu", weights_only=True)
    method = api.load(str(fitted["checkpoint"])).eval()
    trained = method.backbone.state_dict()
    assert state and len(state) == result["num_tensors"]
    for key, value in state.items():
        assert torch.equal(value, trained[key])
    assert Path(result["metadata_path"]).is_file() and result["small_stem"] is True

    repo = str(Path(__file__).resolve().parents[1])
    backbone = torch.hub.load(repo, "backbone", weights=result["safetensors_path"], source="local")
    projector = result["projector"]["safetensors_path"]
    head = torch.hub.load(repo, "projector", weights=projector, source="local")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = method.backbone(x)
        assert torch.equal(backbone(x), feats)
        assert torch.equal(head(feats), method.projector(feats))


def test_neighbour_helpers(fitted: dict[str, object], tmp_path: Path) -> None:
    method = api.load(str(fitted["checkpoint"]))
    dm = api.datamodule(method, ["data.num_workers=0"])
    train, test = api.features(method, dm)
    assert isinstance(train, SplitFeatures) and len(train.labels) == 200
    assert len(test.labels) == 100
    nb = api.neighbours(train, test, [0, 7, 42], k=4)
    assert nb.indices.shape == nb.similarities.shape == (3, 4)
    assert bool((nb.similarities[:, :-1] >= nb.similarities[:, 1:]).all())
    expected = (test.feats[[0, 7, 42]] @ train.feats.T).max(dim=1).values
    torch.testing.assert_close(nb.similarities[:, 0], expected)
    assert api.knn(train, test, [5])[5] == pytest.approx(fitted["knn_acc_after@5"])
    purity = api.purity(train, test, [1, 5, 200])
    assert purity[200] == pytest.approx(10.0)
    top5 = (test.feats @ train.feats.T).topk(5, dim=1).indices
    brute = 100.0 * (train.labels[top5] == test.labels[:, None]).float().mean()
    assert purity[5] == pytest.approx(float(brute))
    assert all(0.0 <= v <= 100.0 for v in purity.values())
    path = api.grid(train, test, dm, tmp_path / "grid.png", queries=[0, 7], k=3, title="t")
    assert path.stat().st_size > 1024


def test_untrained_has_the_architecture_but_fresh_weights(fitted: dict[str, object]) -> None:
    trained = api.load(str(fitted["checkpoint"])).backbone.state_dict()
    fresh = api.untrained(str(fitted["checkpoint"])).backbone.state_dict()
    assert trained.keys() == fresh.keys()
    assert any(
        not torch.equal(trained[k], fresh[k]) for k in trained if trained[k].is_floating_point()
    )
