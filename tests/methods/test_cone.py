from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig

from .helpers import as_train_batch, first_batch, fit_small

SMALL = [
    "method.proj_hidden_dim=64",
    "method.k=8",
    "method.knn_k=10",
]


def test_cone_short_fit_reports_top1(tiny_cfg: Callable[..., DictConfig]) -> None:
    method, trainer = fit_small(tiny_cfg("method=cone", *SMALL, "trainer.max_epochs=2"))
    metrics = trainer.callback_metrics
    assert 0.0 <= float(metrics["val/acc1"]) <= 100.0
    assert "train/l_sup_epoch" in metrics and "train/l_dc_epoch" in metrics
    # one epoch as trained: trainer.limit_train_batches=2 batches of 16, not the 5,000 images
    assert method.bank("queue").size == 2 * 16
    assert bool((method.bank("queue").payloads["label"] >= 0).all())


def test_epoch_zero_is_cross_entropy_only(tiny_cfg: Callable[..., DictConfig]) -> None:
    _, trainer = fit_small(tiny_cfg("method=cone", *SMALL))
    metrics = trainer.callback_metrics
    assert "train/ce_epoch" in metrics
    assert "train/l_sup_epoch" not in metrics and "train/l_dc_epoch" not in metrics


def test_supervised_baseline_has_no_bank(tiny_cfg: Callable[..., DictConfig]) -> None:
    method, trainer = fit_small(tiny_cfg("method=supervised", *SMALL, "trainer.max_epochs=2"))
    assert method.neighbours is not None and method.neighbours.banks == {}
    assert "train/l_sup_epoch" not in trainer.callback_metrics


def test_gradients_reach_student_not_teacher_or_bank(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    cfg = tiny_cfg("method=cone", *SMALL, "trainer.max_epochs=2")
    method, _ = fit_small(cfg)
    batch = first_batch(cfg)
    bank = method.bank("queue")
    before = bank.embeddings.clone()
    method.zero_grad()
    out = method.step(as_train_batch(batch))
    assert "l_sup" in out.logs and "l_dc" in out.logs
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
    assert all(p.grad is None for p in method.teacher.parameters())
    assert not bank.embeddings.requires_grad
    assert torch.equal(before, bank.embeddings)


def test_warns_when_the_confidence_mask_leaves_the_classifier_untrained(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    cfg = tiny_cfg("method=cone", *SMALL, "trainer.max_epochs=2")
    method, _ = fit_small(cfg)
    batch = as_train_batch(first_batch(cfg))
    method.step(batch)  # a trained-for-two-steps student: most samples are kept
    assert int(method.masked_out_steps) == 0
    with torch.no_grad():  # blown-up logits that pick classes at random
        method.student.classifier.weight.normal_(0.0, 1e4)
    out = method.step(batch)
    assert float(out.logs["kept"]) == 0.0 and int(method.masked_out_steps) == 1
    with pytest.warns(UserWarning, match="confidence mask"):
        method.on_train_epoch_end()
    assert int(method.masked_out_steps) == 0


def test_cone_never_uses_its_own_bank_entries(
    tiny_cfg: Callable[..., DictConfig], tiny_data: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbr_contrast.methods.cone as cone

    excluded: list[torch.Tensor] = []
    truth: list[torch.Tensor] = []
    original_loss, original_step = cone.cone_neighbour_loss, cone.CoNe.step

    def loss_spy(q, labels, bank, bank_labels, k, temperature, exclude=None):  # type: ignore[no-untyped-def]
        assert exclude is not None
        excluded.append(exclude.clone())
        return original_loss(q, labels, bank, bank_labels, k, temperature, exclude=exclude)

    def step_spy(self, batch):  # type: ignore[no-untyped-def]
        if self.current_epoch >= 1:  # the bank's dataset indices as this step sees them
            stored = self.bank("queue").payloads["sample_id"]
            truth.append(stored[None, :] == batch.sample_ids[:, None])
        return original_step(self, batch)

    monkeypatch.setattr(cone, "cone_neighbour_loss", loss_spy)
    monkeypatch.setattr(cone.CoNe, "step", step_spy)
    # 100 images, 6 batches of 16 per epoch: the bank (96 entries) holds all of epoch 0
    cfg = tiny_cfg(
        "method=cone", *SMALL, *tiny_data, "trainer.max_epochs=2", "trainer.limit_train_batches=1.0"
    )
    method, _ = fit_small(cfg)
    assert method.bank("queue").size == 96 and len(excluded) == len(truth) == 6
    for got, expected in zip(excluded, truth, strict=True):
        assert torch.equal(got, expected)
    # the situation is real: samples of epoch 1 found their own epoch-0 entries
    assert int(sum(t.sum() for t in truth)) > 16
