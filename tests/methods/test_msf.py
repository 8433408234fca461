from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig

from nbr_contrast.app.build import build_method
from nbr_contrast.losses import msf_loss
from nbr_contrast.methods.msf import MSF

from .helpers import as_train_batch, first_batch, fit_small

SMALL = ["method.queue_size=64", "method.knn_k=10"]


def test_msf_and_byol_short_fits(tiny_cfg: Callable[..., DictConfig]) -> None:
    method, trainer = fit_small(tiny_cfg("method=msf", *SMALL))
    assert isinstance(method, MSF)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
    assert 0.0 <= float(trainer.callback_metrics["train/nbr/agreement_epoch"]) <= 1.0
    assert method.bank("memory").num_seen == 2 * 16  # the targets, after each step
    byol, trainer = fit_small(tiny_cfg("method=byol", *SMALL))
    assert byol.neighbour_specs() == []
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])


def test_heads_follow_the_backbone_width(tiny_cfg: Callable[..., DictConfig]) -> None:
    method = build_method(tiny_cfg("method=msf"))
    width = method.feature_dim
    assert method.projector[0].in_features == width
    assert method.projector[0].out_features == 2 * width
    assert method.embedding_dim == width // 4
    assert method.predictor[-1].out_features == width // 4
    with pytest.raises(ValueError, match=r"method\.k=0 must be at least 1 \(1: BYOL\)"):
        build_method(tiny_cfg("method=msf", "method.k=0"))


def test_each_target_is_its_own_nearest_neighbour_and_k1_is_byol(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    cfg = tiny_cfg("method=msf", *SMALL, "method.k=3")
    method, _ = fit_small(cfg)
    method.eval()
    batch = as_train_batch(first_batch(cfg))
    t = method.keys(batch.views[1])
    neighbours, _ = method.mean_shift_targets(t, batch.labels, batch.sample_ids)
    torch.testing.assert_close(neighbours[:, 0], t)
    # the target's distances choose: similarities to the target decrease along k
    sims = torch.einsum("bd,bkd->bk", t, neighbours)
    assert bool((sims[:, :-1] >= sims[:, 1:] - 1e-6).all())

    # k = 1 through the bank equals BYOL's loss on the target itself
    method.k = 1
    q = torch.nn.functional.normalize(torch.randn_like(t), dim=1)
    nb, _ = method.mean_shift_targets(t, batch.labels, batch.sample_ids)
    torch.testing.assert_close(msf_loss(q, nb), msf_loss(q, t[:, None]))


def test_gradient_reaches_online_modules_not_the_target(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    cfg = tiny_cfg("method=msf", *SMALL)
    method, _ = fit_small(cfg)
    method.zero_grad()
    out = method.step(as_train_batch(first_batch(cfg)))
    out.loss.backward()
    assert all(p.grad is not None for p in method.predictor.parameters())
    assert all(p.grad is not None for p in method.backbone.parameters())
    assert all(p.grad is None for p in method.momentum_backbone.parameters())
    assert set(out.enqueue["memory"]) == {"embeddings", "label", "sample_id"}
