"""CPU view and evaluation transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from nbr_contrast import api
from nbr_contrast.app.reliability.validation import ConfigError, validate_config
from nbr_contrast.data.config import ViewConfig
from nbr_contrast.data.views import (
    MultiView,
    build_eval_transform,
    build_multiview,
    build_view_transform,
)

MEAN = [0.5, 0.4, 0.3]
STD = [0.2, 0.25, 0.3]


def plain(size: int = 32, **kwargs: object) -> ViewConfig:
    """A view with every random op off."""
    off = {"crop": "none", "flip_p": 0.0, "jitter_p": 0.0, "grayscale_p": 0.0}
    return ViewConfig(size=size, **{**off, **kwargs})


def normalised(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("crop", ["rrc", "pad", "none"])
@pytest.mark.parametrize("size", [32, 16])
def test_view_shape_and_dtype(image: np.ndarray, crop: str, size: int) -> None:
    view = ViewConfig(size=size, crop=crop, blur_p=0.5, solarize_p=0.5)
    out = build_view_transform(view, MEAN, STD)(Image.fromarray(image))
    assert type(out) is torch.Tensor
    assert out.shape == (3, size, size) and out.dtype == torch.float32


def test_identity_view_is_the_normalised_image(image: np.ndarray) -> None:
    transform = build_view_transform(plain(), MEAN, STD)
    expected = normalised(image)
    torch.testing.assert_close(transform(Image.fromarray(image)), expected)
    torch.testing.assert_close(transform(torch.from_numpy(image).permute(2, 0, 1)), expected)


def test_ops_follow_byol_order() -> None:
    view = ViewConfig(crop="rrc", flip_p=0.5, jitter_p=0.8, grayscale_p=0.2, blur_p=1.0)
    view.solarize_p = 0.2
    ops = build_view_transform(view, MEAN, STD).transforms
    kinds = [type(t.transforms[0] if isinstance(t, v2.RandomApply) else t) for t in ops]
    assert kinds == [
        v2.ToImage,
        v2.RandomResizedCrop,
        v2.RandomHorizontalFlip,
        v2.ColorJitter,
        v2.RandomGrayscale,
        v2.GaussianBlur,
        v2.RandomSolarize,
        v2.ToDtype,
        v2.Normalize,
        v2.ToPureTensor,
    ]


def test_zero_probability_ops_are_left_out() -> None:
    kinds = {type(t) for t in build_view_transform(plain(), MEAN, STD).transforms}
    assert kinds == {v2.ToImage, v2.Resize, v2.ToDtype, v2.Normalize, v2.ToPureTensor}


@pytest.mark.parametrize(("size", "kernel"), [(32, 3), (96, 9), (224, 23)])
def test_blur_kernel_is_ten_percent_odd(size: int, kernel: int) -> None:
    transform = build_view_transform(plain(size, blur_p=1.0), MEAN, STD)
    blur = next(t for t in transform.transforms if isinstance(t, v2.RandomApply))
    assert list(blur.transforms[0].kernel_size) == [kernel, kernel]


def test_solarize_inverts_bright_pixels() -> None:
    image = np.full((8, 8, 3), 200, dtype=np.uint8)
    image[:4] = 50
    view = plain(8, solarize_p=1.0, solarize_threshold=0.5)
    out = build_view_transform(view, [0.0] * 3, [1.0] * 3)(Image.fromarray(image))
    assert torch.allclose(out[:, :4], torch.tensor(50 / 255))
    assert torch.allclose(out[:, 4:], torch.tensor(55 / 255))


def test_grayscale_and_flip_apply(image: np.ndarray) -> None:
    gray = build_view_transform(plain(grayscale_p=1.0), MEAN, STD)(Image.fromarray(image))
    raw = gray * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    torch.testing.assert_close(raw[0], raw[1])
    flipped = build_view_transform(plain(flip_p=1.0), MEAN, STD)(Image.fromarray(image))
    torch.testing.assert_close(flipped, normalised(image).flip(-1))


def test_pad_crop_resizes_larger_sources_first() -> None:
    big = Image.new("RGB", (64, 48), (255, 0, 0))
    out = build_view_transform(plain(32, crop="pad", pad=4), MEAN, STD)(big)
    assert out.shape == (3, 32, 32)


def test_unknown_crop_names_data_views() -> None:
    with pytest.raises(ValueError, match=r"data\.views"):
        build_view_transform(ViewConfig(crop="zoom"), MEAN, STD)


def test_eval_transform_centre_crops_non_square() -> None:
    array = np.zeros((40, 60, 3), dtype=np.uint8)
    array[:, 5:55] = 255
    out = build_eval_transform(32, [0.0] * 3, [1.0] * 3)(Image.fromarray(array))
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out, torch.ones_like(out))


def test_multiview_sizes_and_empty() -> None:
    multi = build_multiview([plain(32), plain(16)], MEAN, STD)
    views = multi(Image.new("RGB", (32, 32)))
    assert len(multi) == 2 and [v.shape[-1] for v in views] == [32, 16]
    with pytest.raises(ValueError, match=r"data\.views"):
        MultiView([])


def test_eval_crop_pct_keeps_the_centre_of_the_resized_short_side() -> None:
    # 320x256 image whose outer 16 px (at the 256 px short side) are black: resize 256, centre
    # 224 (crop_pct 0.875) keeps only the white centre; crop_pct 1 keeps the black border
    array = np.zeros((256, 320, 3), dtype=np.uint8)
    array[16:240, 48:272] = 255
    image = Image.fromarray(array)
    imagenet = build_eval_transform(224, [0.0] * 3, [1.0] * 3, crop_pct=0.875)(image)
    whole = build_eval_transform(224, [0.0] * 3, [1.0] * 3)(image)
    assert imagenet.shape == whole.shape == (3, 224, 224)
    assert imagenet.min() > 0.9
    assert whole[:, 0, :].max() < 0.1


def test_image_folders_evaluate_at_resize_256_centre_224(tmp_path) -> None:
    cfg = api.compose(["data=imagefolder", f"data.root={tmp_path}"], output_dir=tmp_path / "run")
    assert cfg.data.image_size == 224
    assert round(cfg.data.image_size / cfg.data.eval_crop_pct) == 256


@pytest.mark.parametrize("bad", ["0", "1.5"])
def test_eval_crop_pct_outside_0_1_is_refused(tmp_path, bad) -> None:
    cfg = api.compose([f"data.eval_crop_pct={bad}"], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"data\.eval_crop_pct=.* must be in \(0, 1\]"):
        validate_config(cfg)
