from __future__ import annotations

import torch
from torch import nn

from nbr_contrast.monitors.features import extract_features


def make_batches(n: int = 23, batch_size: int = 5) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (n,), generator=gen)
    indices = torch.randperm(100, generator=gen)[:n]
    return [
        {
            "image": images[i : i + batch_size],
            "label": labels[i : i + batch_size],
            "sample_id": indices[i : i + batch_size],
        }
        for i in range(0, n, batch_size)
    ]


def make_backbone() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
    )


def test_preserves_order_and_matches_eval_forward() -> None:
    batches = make_batches()
    backbone = make_backbone().train()
    feats, labels, indices = extract_features(backbone, batches, "cpu", progress=True)
    assert feats.shape == (23, 8) and feats.dtype == torch.float32
    assert torch.equal(indices, torch.cat([b["sample_id"] for b in batches]))
    assert torch.equal(labels, torch.cat([b["label"] for b in batches]))
    assert labels.dtype == torch.long and indices.dtype == torch.long
    backbone.eval()
    with torch.no_grad():
        expected = torch.cat([backbone(b["image"]).flatten(1) for b in batches])
    torch.testing.assert_close(feats, expected)


def test_restores_train_mode_per_submodule() -> None:
    backbone = make_backbone().train()
    backbone[1].eval()
    running = backbone[1].running_mean.clone()
    extract_features(backbone, make_batches(), "cpu", progress=False)
    assert backbone.training and backbone[0].training and backbone[3].training
    assert not backbone[1].training
    assert torch.equal(backbone[1].running_mean, running)


def test_restores_eval_mode_and_no_grad() -> None:
    backbone = make_backbone().eval()
    feats, _, _ = extract_features(backbone, make_batches(), "cpu", progress=False)
    assert not backbone.training
    assert not feats.requires_grad


def test_normalize_and_max_items() -> None:
    batches = make_batches()
    feats, labels, indices = extract_features(
        make_backbone(), batches, "cpu", normalize=True, max_items=12, progress=False
    )
    assert feats.shape[0] == labels.shape[0] == indices.shape[0] == 12
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(12))
    assert torch.equal(indices, torch.cat([b["sample_id"] for b in batches])[:12])
