from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from nbr_contrast.app.build import build_method
from nbr_contrast.losses import co2_consistency, moco_infonce
from nbr_contrast.methods.co2 import CO2

from .helpers import as_train_batch, first_batch, fit_small

SMALL = [
    "method.proj_hidden_dim=64",
    "method.proj_output_dim=32",
    "method.queue_size=64",
    "method.knn_k=10",
    "optim=sgd",
]


def test_co2_and_mocov2_short_fits(tiny_cfg: Callable[..., DictConfig]) -> None:
    for name in ("co2", "mocov2"):
        method, trainer = fit_small(tiny_cfg(f"method={name}", *SMALL))
        assert trainer.global_step == 2
        assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
        assert method.bank("queue").num_seen == 2 * 2 * 16  # both views' keys per step
    assert tiny_cfg("method=mocov2").method.alpha == 0.0


def test_queue_snapshot_excludes_current_keys(tiny_cfg: Callable[..., DictConfig]) -> None:
    method, _ = fit_small(tiny_cfg("method=co2", *SMALL))
    seen: list[torch.Tensor] = []
    original = method.contrast

    def spy(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, own: torch.Tensor | None):
        seen.append(queue)
        return original(q, k, queue, own)

    method.contrast = spy  # type: ignore[method-assign]
    # another seed: training's own first batch (same items, same views) is already queued
    batch = first_batch(tiny_cfg("method=co2", *SMALL, "seed=7"))
    out = method.step(as_train_batch(batch))
    keys = out.enqueue["queue"]["embeddings"]
    for queue in seen:
        assert torch.cdist(keys, queue).min() > 1e-4
        assert torch.equal(queue, method.bank("queue").embeddings)


def test_alpha_zero_is_exactly_moco(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg("method=co2", *SMALL, "method.alpha=0")
    method, _ = fit_small(cfg)
    assert isinstance(method, CO2)
    method.eval()
    batch = first_batch(cfg)
    x1, x2 = batch["views"]
    out = method.step(as_train_batch(batch))
    queue = method.bank("queue").embeddings
    q1 = torch.nn.functional.normalize(method.projector(method.features(x1)), dim=1)
    q2 = torch.nn.functional.normalize(method.projector(method.features(x2)), dim=1)
    k1, k2 = method.keys(x1), method.keys(x2)
    expected = 0.5 * (moco_infonce(q1, k2, queue, 0.2) + moco_infonce(q2, k1, queue, 0.2))
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert "l_con" not in out.logs  # no consistency term to log
    assert co2_consistency(q1, k2, queue, 0.05) > 0


def test_co2_logs_its_consistency_term(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg("method=co2", *SMALL)
    method, _ = fit_small(cfg)
    out = method.step(as_train_batch(first_batch(cfg)))
    assert float(out.logs["l_con"]) > 0
    assert torch.allclose(out.loss, out.logs["l_ins"] + out.logs["l_con"])  # α = 1


def test_consistency_moves_the_online_encoder(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg("method=co2", *SMALL)
    method, _ = fit_small(cfg)
    batch = first_batch(cfg)
    x1, x2 = batch["views"]
    queue = method.bank("queue").embeddings
    q = torch.nn.functional.normalize(method.projector(method.features(x1)), dim=1)
    co2_consistency(q, method.keys(x2), queue, 0.05).backward()
    grads = [p.grad for p in method.backbone.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in method.momentum_backbone.parameters())


def test_head_has_batch_norm_only_when_asked(tiny_cfg: Callable[..., DictConfig]) -> None:
    for on in (False, True):
        cfg = tiny_cfg("method=mocov2", f"method.proj_hidden_bn={str(on).lower()}")
        method = build_method(cfg)
        for head in (method.projector, method.momentum_projector):
            norms = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
            assert len(norms) == int(on)
