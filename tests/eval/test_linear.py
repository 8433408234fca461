from __future__ import annotations

import pytest
import torch
from torch import nn

from nbr_contrast.eval.features import extract_features
from nbr_contrast.eval.linear import linear_eval, linear_eval_on_features


def separable(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points labelled by a fixed linear map, keeping only those with a margin."""
    w = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123))
    x = torch.randn(4 * n, dim, generator=torch.Generator().manual_seed(seed))
    logits = x @ w.T
    top2 = logits.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) > 1.0
    return x[keep][:n], logits[keep][:n].argmax(dim=1)


def test_linear_eval_on_features_separates() -> None:
    train_x, train_y = separable(2000, 32, 5, seed=0)
    test_x, test_y = separable(500, 32, 5, seed=1)
    result = linear_eval_on_features(
        train_x, train_y, test_x, test_y, 5, epochs=30, lr=0.1, batch_size=128, seed=0
    )
    assert result["top1"] >= 98.0
    assert result["top5"] == 100.0
    assert result["epochs"] == 30 and len(result["history"]) == 30
    assert set(result["history"][0]) == {"epoch", "train_loss", "test_top1"}
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]


def image_batches(seed: int, n: int = 240, batch_size: int = 32) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    means = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(7)) * 2.0
    images = means[labels] + 0.3 * torch.randn(n, 3, 4, 4, generator=gen)
    return [
        {
            "image": images[i : i + batch_size],
            "label": labels[i : i + batch_size],
            "index": torch.arange(i, min(i + batch_size, n)),
        }
        for i in range(0, n, batch_size)
    ]


def tiny_backbone() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.BatchNorm1d(16)).train()


def test_linear_eval_recomputes_through_frozen_backbone() -> None:
    backbone = tiny_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    epochs_seen: list[int] = []

    def factory(epoch: int) -> list[dict[str, torch.Tensor]]:
        epochs_seen.append(epoch)
        return image_batches(seed=epoch)

    result = linear_eval(
        backbone,
        image_batches(0),
        image_batches(99),
        3,
        epochs=5,
        lr=0.1,
        augment_loader_factory=factory,
        progress=False,
    )
    assert epochs_seen == [0, 1, 2, 3, 4]
    assert result["mode"] == "recomputed" and len(result["history"]) == 5
    assert result["top1"] > 90.0
    assert backbone.training
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in backbone.parameters())


def test_linear_eval_precompute_uses_feature_path() -> None:
    backbone = tiny_backbone()
    train, test = image_batches(0), image_batches(99)
    result = linear_eval(
        backbone, train, test, 3, epochs=4, batch_size=64, seed=3, precompute=True, progress=True
    )
    train_x, train_y, _ = extract_features(backbone, train, "cpu", progress=False)
    test_x, test_y, _ = extract_features(backbone, test, "cpu", progress=False)
    expected = linear_eval_on_features(
        train_x, train_y, test_x, test_y, 3, epochs=4, batch_size=64, seed=3
    )
    assert result["mode"] == "precomputed"
    assert result["top1"] == expected["top1"] and result["history"] == expected["history"]


def test_precompute_with_factory_is_rejected() -> None:
    with pytest.raises(ValueError, match="precompute"):
        linear_eval(
            tiny_backbone(),
            image_batches(0),
            image_batches(1),
            3,
            precompute=True,
            augment_loader_factory=lambda epoch: image_batches(epoch),
            progress=False,
        )
