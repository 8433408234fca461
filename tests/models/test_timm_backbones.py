"""``backbone=timm``: every method trains on a timm ResNet and ViT; weights, drop path, export."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from torch import nn

from nbr_contrast import api
from nbr_contrast.app.build import build_method
from nbr_contrast.app.config import BackboneConfig
from nbr_contrast.models.backbones import build_backbone

from ..methods.helpers import fit_small

timm = pytest.importorskip("timm")

ONE_STEP = ["trainer.limit_train_batches=1", "method.knn_k=10"]
# small heads and queues, as each method's own tests use them
METHODS = {
    "nnclr": [
        "method.proj_hidden_dim=64",
        "method.pred_hidden_dim=64",
        "method.proj_output_dim=32",
        "method.queue_size=48",
    ],
    "co2": ["method.proj_hidden_dim=64", "method.proj_output_dim=32", "method.queue_size=64"],
    "snclr": [
        "method.proj_hidden_dim=64",
        "method.pred_hidden_dim=64",
        "method.proj_output_dim=32",
        "method.queue_size=64",
        "method.k=3",
    ],
    "clim": [
        "method.proj_hidden_dim=64",
        "method.proj_output_dim=32",
        "method.queue_size=64",
        "method.n_clusters=4",
        "method.k=3",
    ],
    "cone": ["method.proj_hidden_dim=64", "method.k=8"],
    "msf": ["method.queue_size=64"],
}
RESNET = ["backbone=timm", "backbone.name=resnet18"]
# dynamic_img_size: the position embedding follows the input, for CLIM's smaller crops
VIT = [
    "backbone=timm",
    "backbone.name=vit_tiny_patch16_224",
    "+backbone.kwargs.patch_size=4",
    "+backbone.kwargs.dynamic_img_size=true",
]
TINY_VIT = {"patch_size": 4, "depth": 2}


def timm_cfg(name: str, **fields: object) -> BackboneConfig:
    return BackboneConfig(source="timm", name=name, **fields)  # type: ignore[arg-type]


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.flatten(model.eval()(x), 1)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(("backbone", "dim"), [(RESNET, 512), (VIT, 192)], ids=["resnet", "vit"])
def test_every_method_trains_a_step_on_timm_at_32px(
    tiny_cfg: Callable[..., DictConfig], method: str, backbone: list[str], dim: int
) -> None:
    cfg = tiny_cfg(f"method={method}", *METHODS[method], *ONE_STEP, *backbone)
    trained, trainer = fit_small(cfg)
    assert trainer.global_step == 1
    assert type(trained.backbone).__module__.startswith("timm.")
    assert trained.feature_dim == dim
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])


def test_timm_models_get_the_image_size_and_small_stem() -> None:
    vit = build_backbone(timm_cfg("vit_tiny_patch16_224", kwargs=TINY_VIT), 32)
    assert vit.patch_embed.img_size == (32, 32) and vit.pos_embed.shape[1] == 1 + 8 * 8
    assert features(vit, torch.randn(2, 3, 32, 32)).shape == (2, 192)
    small = build_backbone(timm_cfg("resnet18"), 32)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    large = build_backbone(timm_cfg("resnet18"), 224)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, nn.MaxPool2d)
    kept = build_backbone(timm_cfg("resnet18", small_stem=False), 32)
    assert kept.conv1.kernel_size == (7, 7)
    with pytest.raises(ValueError, match=r"backbone\.small_stem=true"):
        build_backbone(timm_cfg("vit_tiny_patch16_224", small_stem=True, kwargs=TINY_VIT), 32)


def test_drop_path_rate_reaches_the_model(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg(*VIT, "+backbone.kwargs.depth=2", "backbone.drop_path_rate=0.2")
    blocks = build_method(cfg).backbone.blocks
    # timm spreads the rate linearly over the blocks, reaching it at the last one
    assert blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    plain = build_backbone(timm_cfg("vit_tiny_patch16_224", kwargs=TINY_VIT), 32)
    assert isinstance(plain.blocks[-1].drop_path1, nn.Identity)
    with pytest.raises(ValueError, match=r"backbone\.drop_path_rate=0\.2 needs a timm"):
        build_backbone(BackboneConfig(drop_path_rate=0.2), 32)


def test_unknown_timm_name_is_named() -> None:
    with pytest.raises(ValueError, match=r"backbone\.name='resnet19' is not a timm model"):
        build_backbone(timm_cfg("resnet19"), 32)


def test_weights_file_initialises_the_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_backbone(timm_cfg("resnet18"), 32)
    path = tmp_path / "init.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = build_backbone(timm_cfg("resnet18", weights=str(path)), 32)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(features(loaded, x), features(source, x), rtol=0, atol=0)

    # a classification checkpoint (timm's hub files): the classifier weights are ignored
    classifier = timm.create_model("resnet18", num_classes=7)
    torch.save(classifier.state_dict(), tmp_path / "hub.pth")
    cfg = timm_cfg("resnet18", small_stem=False, weights=str(tmp_path / "hub.pth"))
    with_hub = build_backbone(cfg, 64)
    classifier.reset_classifier(0)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(features(with_hub, x), features(classifier, x), rtol=0, atol=0)


def test_safetensors_weights_load(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = build_backbone(timm_cfg("vit_tiny_patch16_224", kwargs=TINY_VIT), 32)
    save_file(source.state_dict(), tmp_path / "model.safetensors")
    cfg = timm_cfg(
        "vit_tiny_patch16_224", kwargs=TINY_VIT, weights=str(tmp_path / "model.safetensors")
    )
    loaded = build_backbone(cfg, 32)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(features(loaded, x), features(source, x), rtol=0, atol=0)


def test_wrong_or_missing_weights_file_fails_in_one_line(tmp_path: Path) -> None:
    vit = build_backbone(timm_cfg("vit_tiny_patch16_224", kwargs=TINY_VIT), 32)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    with pytest.raises(ValueError, match=r"backbone\.weights=.*vit\.pth does not fit") as err:
        build_backbone(timm_cfg("resnet18", weights=str(tmp_path / "vit.pth")), 32)
    assert "\n" not in str(err.value) and "missing keys ['bn1.bias'" in str(err.value)
    # the ImageNet stem's weights do not fit the small stem
    torch.save(build_backbone(timm_cfg("resnet18"), 224).state_dict(), tmp_path / "big.pth")
    with pytest.raises(ValueError, match=r"shape mismatches \['conv1\.weight'\]"):
        build_backbone(timm_cfg("resnet18", weights=str(tmp_path / "big.pth")), 32)
    with pytest.raises(FileNotFoundError, match=r"backbone\.weights=.*nowhere\.pth does not exist"):
        build_backbone(timm_cfg("resnet18", weights=str(tmp_path / "nowhere.pth")), 32)
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.pth is not a state-dict file") as err:
        build_backbone(timm_cfg("resnet18", weights=str(tmp_path / "text.pth")), 32)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("backbone", "small_stem"),
    [(RESNET, True), ([*VIT, "+backbone.kwargs.depth=2"], False)],
    ids=["resnet", "vit"],
)
def test_export_reloads_into_timm_with_identical_features(
    tiny_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backbone: list[str],
    small_stem: bool,
) -> None:
    torch.manual_seed(3)
    init = tmp_path / "init.pth"
    cfg = tiny_cfg("method=nnclr", *METHODS["nnclr"], *ONE_STEP, *backbone)
    torch.save(build_method(cfg).backbone.state_dict(), init)
    cfg = tiny_cfg(
        *METHODS["nnclr"], *ONE_STEP, *backbone, f"backbone.weights={init}", "knn_report=false"
    )
    summary = api.fit(cfg)
    init.unlink()  # the checkpoint holds the weights: export needs no init file
    result = api.evaluate(str(summary["checkpoint"]), "export", output_dir=tmp_path / "export")
    meta = json.loads(Path(result["metadata_path"]).read_text())
    assert meta["family"] == "timm" and meta["small_stem"] is small_stem

    name = cfg.backbone.name
    model = timm.create_model(name, **meta["timm_args"])
    assert meta["timm_args"]["num_classes"] == 0
    if meta["small_stem"]:
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    model.load_state_dict(torch.load(result["path"], weights_only=True), strict=True)
    trained = api.load(str(summary["checkpoint"])).backbone
    x = torch.randn(2, 3, 32, 32)
    expected = features(trained, x)
    torch.testing.assert_close(features(model, x), expected, rtol=0, atol=0)

    monkeypatch.chdir(tmp_path / "export")
    namespace: dict[str, object] = {}
    exec(meta["load_instructions"], namespace)
    torch.testing.assert_close(features(namespace["model"], x), expected, rtol=0, atol=0)

    repo = str(Path(__file__).resolve().parents[2])
    for weights in (result["safetensors_path"], result["path"]):
        hub_model = torch.hub.load(repo, "backbone", weights=weights, source="local")
        assert not hub_model.training
        torch.testing.assert_close(features(hub_model, x), expected, rtol=0, atol=0)
