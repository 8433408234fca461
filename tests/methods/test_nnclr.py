from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig

from nbr_contrast import api
from nbr_contrast.app.build import build_datamodule, build_method, build_trainer
from nbr_contrast.data.sources import mini_source
from nbr_contrast.losses import nnclr_loss
from nbr_contrast.neighbours.callback import NeighbourIndexCallback

from .helpers import fit_small

SMALL = [
    "method=nnclr",
    "method.proj_hidden_dim=64",
    "method.pred_hidden_dim=64",
    "method.proj_output_dim=32",
    "method.queue_size=48",
    "method.knn_k=10",
]


def test_short_fit_reports_knn_and_checkpoint(tiny_cfg: Callable[..., DictConfig]) -> None:
    summary = api.fit(tiny_cfg(*SMALL))
    assert 0.0 <= summary["knn_acc_before@10"] <= 100.0
    assert 0.0 <= summary["knn_acc_after@10"] <= 100.0
    assert summary["linear_probe_acc1"] is not None
    assert summary["steps"] == 2
    ckpt = torch.load(summary["checkpoint"], map_location="cpu", weights_only=False)
    banks = ckpt["callbacks"]["NeighbourIndexCallback"]["banks"]
    assert banks["support"]["embeddings"].shape == (48, 32)


def test_bank_payloads_are_the_true_labels(tiny_cfg: Callable[..., DictConfig]) -> None:
    method, _ = fit_small(tiny_cfg(*SMALL))
    bank = method.bank("support")
    filled = bank.payloads["sample_id"] >= 0
    assert int(filled.sum()) == 32  # 2 steps x batch 16
    labels = torch.as_tensor(mini_source("train").labels)
    idx = bank.payloads["sample_id"][filled]
    assert torch.equal(bank.payloads["label"][filled].cpu(), labels[idx.cpu()])
    emb = bank.embeddings[filled]
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-5)


def test_positive_is_the_banks_nearest_entry(tiny_cfg: Callable[..., DictConfig]) -> None:
    method, _ = fit_small(tiny_cfg(*SMALL))
    z = torch.randn(5, 32)
    positives, found = method.positives(z, torch.zeros(5, dtype=torch.long))
    bank = method.bank("support")
    sims = torch.nn.functional.normalize(z, dim=1) @ bank.embeddings.T
    assert torch.allclose(positives, bank.embeddings[sims.argmax(dim=1)])
    assert found is not None and found.payloads["label"].shape == (5, 1)


def test_use_nn_false_uses_the_embedding_itself(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg(*SMALL, "method.use_nn=false")
    method = build_method(cfg)
    z = torch.randn(4, 32)
    positives, found = method.positives(z, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(positives, torch.nn.functional.normalize(z, dim=1))
    assert found is None


@pytest.mark.parametrize("stop_grad_self", [False, True])
def test_ablation_gradient_reaches_z_through_the_positive(
    tiny_cfg: Callable[..., DictConfig], stop_grad_self: bool
) -> None:
    cfg = tiny_cfg(*SMALL, "method.use_nn=false", f"method.stop_grad_self={stop_grad_self}")
    method = build_method(cfg)
    z = torch.randn(4, 32, requires_grad=True)
    predictions = torch.randn(4, 32)  # constants: any gradient to z comes via the positive
    positives, _ = method.positives(z, torch.zeros(4, dtype=torch.long))
    assert positives.requires_grad is not stop_grad_self
    if not stop_grad_self:
        nnclr_loss(positives, predictions, 0.2).backward()
        assert z.grad is not None and z.grad.abs().sum() > 0


def test_bank_smaller_than_k_is_a_clear_error(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg(*SMALL, "method.queue_size=0")
    with pytest.raises(ValueError, match=r"method\.queue_size=0 must be positive"):
        fit_small(cfg)


def test_resume_restores_bank_and_ema_state(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg(*SMALL)
    method, trainer = fit_small(cfg)
    saved = method.bank("support").state_dict()
    ckpt = trainer.checkpoint_callback.last_model_path
    cfg.trainer.max_epochs = 2
    resumed_method = build_method(cfg)
    resumed = build_trainer(cfg)
    callback = next(c for c in resumed.callbacks if isinstance(c, NeighbourIndexCallback))
    resumed.fit(resumed_method, datamodule=build_datamodule(cfg), ckpt_path=ckpt)
    assert callback.index is not None
    assert resumed.global_step == 4
    # the restored bank continued from the saved one: its first 32 entries were
    # overwritten by the 2 new steps only at the FIFO positions after the saved pointer
    bank = resumed_method.bank("support")
    assert bank.num_seen == int(saved["num_seen"]) + 32
