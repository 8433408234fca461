from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from nbr_contrast.app.evaluation.export import SMALL_STEM_RECIPE, export_backbone


def warm_batch_norm(model: nn.Module, image_size: int) -> nn.Module:
    """Give batch-norm layers non-trivial running statistics, then switch to eval mode."""
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, image_size, image_size))
    return model.eval()


def small_stem_resnet18() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return warm_batch_norm(model, 32)


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )
    model.heads = nn.Identity()
    return model.eval()


def test_resnet_round_trip_follows_json_recipe(tmp_path: Path) -> None:
    backbone = small_stem_resnet18()
    path = tmp_path / "resnet18_backbone.pth"
    info = export_backbone(backbone, path, "resnet18")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["arch"] == "resnet18" and meta["small_stem"] is True
    assert meta["feature_dim"] == 512
    assert SMALL_STEM_RECIPE in meta["load_instructions"]
    assert info["metadata_path"] == str(path.with_suffix(".json"))

    state = torch.load(path, weights_only=True)
    reference_keys = {
        k for k in torchvision.models.resnet18().state_dict() if not k.startswith("fc.")
    }
    assert set(state) == reference_keys

    model = getattr(torchvision.models, meta["arch"])()
    if meta["small_stem"]:
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), backbone(x), rtol=0, atol=0)


def test_vit_round_trip_from_constructor_args(tmp_path: Path) -> None:
    backbone = tiny_vit()
    path = tmp_path / "vit_backbone.pth"
    export_backbone(backbone, path, "vit_tiny")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["vit_args"] == {
        "image_size": 32,
        "patch_size": 8,
        "num_layers": 2,
        "num_heads": 2,
        "hidden_dim": 32,
        "mlp_dim": 64,
    }
    assert meta["feature_dim"] == 32
    model = torchvision.models.VisionTransformer(**meta["vit_args"])
    model.heads = nn.Identity()
    state = torch.load(path, weights_only=True)
    assert not any(k.startswith("heads.") for k in state)
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), backbone(x), rtol=0, atol=0)


def standard_stem_resnet18() -> nn.Module:
    torch.manual_seed(1)
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    return warm_batch_norm(model, 64)


@pytest.mark.parametrize(
    ("build", "arch", "size"),
    [
        (small_stem_resnet18, "resnet18", 32),
        (standard_stem_resnet18, "resnet18", 64),
        (tiny_vit, "vit_tiny", 32),
    ],
)
def test_load_instructions_execute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build, arch: str, size: int
) -> None:
    backbone = build()
    path = tmp_path / "backbone.pth"
    export_backbone(backbone, path, arch)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(json.loads(path.with_suffix(".json").read_text())["load_instructions"], namespace)
    model = namespace["model"].eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), backbone(x), rtol=0, atol=0)


def test_rejects_mismatched_arch_and_unknown_modules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="resnet50"):
        export_backbone(small_stem_resnet18(), tmp_path / "a.pth", "resnet50")
    with pytest.raises(ValueError, match="not a torchvision ResNet"):
        export_backbone(small_stem_resnet18(), tmp_path / "b.pth", "vgg11")
    with pytest.raises(ValueError, match="Sequential"):
        export_backbone(nn.Sequential(nn.Linear(2, 2)), tmp_path / "c.pth", "resnet18")
    assert not list(tmp_path.iterdir())
