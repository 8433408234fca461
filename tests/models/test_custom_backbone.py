"""``backbone=custom backbone._target_=...``: a user's module trains, exports and reloads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from nbr_contrast import api
from nbr_contrast.app.config import BackboneConfig
from nbr_contrast.app.overrides import OverrideError, check_overrides
from nbr_contrast.models.backbones import build_backbone

from ..methods.helpers import fit_small
from .custom_backbone import TinyNet

TARGET = "tests.models.custom_backbone.TinyNet"
CUSTOM = ["backbone=custom", f"backbone._target_={TARGET}", "+backbone.kwargs.width=12"]
SMALL_NNCLR = [
    "method=nnclr",
    "method.proj_hidden_dim=32",
    "method.pred_hidden_dim=32",
    "method.proj_output_dim=16",
    "method.queue_size=48",
    "method.knn_k=10",
    "trainer.limit_train_batches=1",
]


def custom(target: str, **kwargs: object) -> BackboneConfig:
    return BackboneConfig(source="custom", name="custom", _target_=target, kwargs=kwargs)


def test_custom_module_trains_a_step(tiny_cfg: Callable[..., DictConfig]) -> None:
    check_overrides(CUSTOM)
    method, trainer = fit_small(tiny_cfg(*SMALL_NNCLR, *CUSTOM))
    assert trainer.global_step == 1
    assert isinstance(method.backbone, TinyNet)
    # no out_dim/num_features on TinyNet: a dry forward found the 12 pooled channels
    assert method.feature_dim == 12
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])


def test_declared_feature_size_is_used() -> None:
    assert build_backbone(custom("torchvision.models.resnet18"), 32).out_dim == 1000


def test_custom_errors_name_the_setting() -> None:
    with pytest.raises(ValueError, match=r"backbone=custom needs backbone\._target_"):
        build_backbone(BackboneConfig(source="custom"), 32)
    with pytest.raises(ValueError, match=r"backbone\._target_=tests\.models\.nope\.Net cannot"):
        build_backbone(custom("tests.models.nope.Net"), 32)
    with pytest.raises(ValueError, match=r"features \[B, F\].*gave \(4,\)"):
        build_backbone(custom("tests.models.custom_backbone.PerBatchNet"), 32)
    with pytest.raises(OverrideError, match=r"backbone\._targt_"):
        check_overrides(["backbone._targt_=x"])


def test_custom_export_reloads_with_identical_features(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = api.fit(tiny_cfg(*SMALL_NNCLR, *CUSTOM, "knn_report=false"))
    result = api.evaluate(str(summary["checkpoint"]), "export", output_dir=tmp_path / "export")
    meta = json.loads(Path(result["metadata_path"]).read_text())
    assert meta["family"] == "custom" and meta["custom_args"] == {"_target_": TARGET, "width": 12}
    monkeypatch.chdir(tmp_path / "export")
    namespace: dict[str, object] = {}
    exec(meta["load_instructions"], namespace)
    trained = api.load(str(summary["checkpoint"])).backbone.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(namespace["model"].eval()(x), trained(x), rtol=0, atol=0)
