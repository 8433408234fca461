from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from nbr_contrast.app.config import BackboneConfig
from nbr_contrast.app.reliability.validation import ConfigError, validate_config
from nbr_contrast.models.backbones import BACKBONES, build_backbone, uses_small_stem
from nbr_contrast.models.heads import MLPHead


@pytest.mark.parametrize(
    ("name", "dim"),
    [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("vit_tiny", 192)],
)
def test_backbone_feature_dim(name: str, dim: int) -> None:
    model = build_backbone(BackboneConfig(name=name), image_size=32).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, dim)
    assert model.out_dim == dim


def test_small_stem_chosen_for_small_images() -> None:
    small = build_backbone(BackboneConfig(name="resnet18"), image_size=32)
    large = build_backbone(BackboneConfig(name="resnet18"), image_size=224)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    assert large.conv1.kernel_size == (7, 7)
    assert uses_small_stem(BackboneConfig(small_stem=False), 32) is False


def test_unknown_backbone_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"backbone\.name='resnet19'") as err:
        build_backbone(BackboneConfig(name="resnet19"), image_size=32)
    assert all(name in str(err.value) for name in BACKBONES)


def test_vit_patch_must_divide_image() -> None:
    with pytest.raises(ValueError, match=r"backbone\.patch_size=5"):
        build_backbone(BackboneConfig(name="vit_tiny", patch_size=5), image_size=32)


def test_mlp_head_layout() -> None:
    head = MLPHead(8, [16, 16], 4, last_bn=True, last_bn_affine=False)
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    norms = [m for m in head if isinstance(m, torch.nn.BatchNorm1d)]
    assert [lin.out_features for lin in linears] == [16, 16, 4]
    assert len(norms) == 3 and norms[-1].affine is False
    assert head(torch.randn(5, 8)).shape == (5, 4)


def test_backbone_config_of_an_older_run_builds() -> None:
    # checkpoints written before backbone.source/weights/kwargs existed
    old = OmegaConf.create(
        {"name": "resnet18", "small_stem": None, "patch_size": 4, "zero_init_residual": False}
    )
    model = build_backbone(old, image_size=32)
    assert model.source == "torchvision" and model.out_dim == 512


def test_drop_path_rate_range_is_checked(tiny_cfg) -> None:
    with pytest.raises(ConfigError, match=r"backbone\.drop_path_rate=1\.5 must be in \[0, 1\)"):
        validate_config(tiny_cfg("backbone=timm", "backbone.drop_path_rate=1.5"))
