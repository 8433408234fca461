import math

import pytest
import torch

from nbr_contrast.losses import cone_dc_loss, cone_dc_target, cone_neighbour_loss


def _unit(v):
    return v / v.norm()


def slow_neighbour(q, labels, bank, bank_labels, k, tau):
    total = 0.0
    for i in range(q.shape[0]):
        sims = [float(_unit(q[i]) @ _unit(b)) for b in bank]
        top = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        denom = sum(math.exp(sims[j] / tau) for j in top)
        p = sum(math.exp(sims[j] / tau) / denom for j in top if bank_labels[j] == labels[i])
        if p > 1e-8:
            total += -math.log(p)
    return total / q.shape[0]


def slow_dc(logits, teacher, bank, probs, tau, mask=None):
    total = 0.0
    for i in range(logits.shape[0]):
        if mask is not None and not mask[i]:
            continue
        sims = [math.exp(float(_unit(teacher[i]) @ _unit(b)) / tau) for b in bank]
        a = [s / sum(sims) for s in sims]
        t = [sum(a[j] * float(probs[j, c]) for j in range(len(a))) for c in range(probs.shape[1])]
        z = sum(math.exp(float(v)) for v in logits[i])
        s = [math.exp(float(v)) / z for v in logits[i]]
        total += sum(tc * math.log(tc / sc) for tc, sc in zip(t, s, strict=True) if tc > 0)
    return total / logits.shape[0]


def _data(seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(5, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (5,), generator=g)
    bank = torch.randn(12, 4, generator=g, dtype=torch.float64)
    bank_labels = torch.randint(0, 3, (12,), generator=g)
    return q, labels, bank, bank_labels


@pytest.mark.parametrize("k", [1, 4, 12])
def test_neighbour_loss_matches_slow_formula(k: int) -> None:
    q, labels, bank, bank_labels = _data(0)
    got = cone_neighbour_loss(q, labels, bank, bank_labels, k, 0.1)
    expected = slow_neighbour(q, labels.tolist(), bank, bank_labels.tolist(), k, 0.1)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_sample_without_same_class_neighbour_contributes_nothing() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    bank_labels = torch.tensor([0, 0, 0])
    labels = torch.tensor([0, 1])  # sample 1 has no class-1 neighbour
    got = cone_neighbour_loss(q, labels, bank, bank_labels, 3, 0.5)
    assert got.item() == pytest.approx(0.0, abs=1e-12)  # sample 0: p = 1
    bank_labels = torch.tensor([0, 1, 1])
    # sample 0: p = w(bank 0) over cosines [1, 0, 0.6]; sample 1 is skipped; divide by B = 2
    e = [math.exp(1 / 0.5), 1.0, math.exp(0.6 / 0.5)]
    expected = -math.log(e[0] / sum(e)) / 2
    labels = torch.tensor([0, 2])
    got = cone_neighbour_loss(q, labels, bank, bank_labels, 3, 0.5)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_neighbour_loss_gradient_and_k_check() -> None:
    q, labels, bank, bank_labels = _data(1)
    q.requires_grad_(True)
    bank.requires_grad_(True)
    cone_neighbour_loss(q, labels, bank, bank_labels, 4, 0.1).backward()
    assert q.grad.abs().sum() > 0 and bank.grad is None
    with pytest.raises(ValueError, match="k=13"):
        cone_neighbour_loss(q, labels, bank, bank_labels, 13, 0.1)


def _dc_data(seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64)
    teacher = torch.randn(4, 5, generator=g, dtype=torch.float64)
    bank = torch.randn(7, 5, generator=g, dtype=torch.float64)
    probs = torch.randn(7, 3, generator=g, dtype=torch.float64).softmax(dim=1)
    probs[0] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    return logits, teacher, bank, probs


def test_dc_target_rows_are_distributions() -> None:
    _, teacher, bank, probs = _dc_data(2)
    t = cone_dc_target(teacher, bank, probs, 0.07)
    assert bool((t >= 0).all())
    assert torch.allclose(t.sum(dim=1), torch.ones(4, dtype=torch.float64))


def test_dc_loss_matches_slow_formula_with_and_without_mask() -> None:
    logits, teacher, bank, probs = _dc_data(3)
    got = cone_dc_loss(logits, teacher, bank, probs, 0.07)
    assert got.item() == pytest.approx(slow_dc(logits, teacher, bank, probs, 0.07), rel=1e-10)
    mask = torch.tensor([True, False, True, False])
    got = cone_dc_loss(logits, teacher, bank, probs, 0.07, mask=mask)
    expected = slow_dc(logits, teacher, bank, probs, 0.07, mask.tolist())
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_dc_loss_zero_at_target_and_gradient_to_logits_only() -> None:
    logits, teacher, bank, probs = _dc_data(4)
    probs = torch.full_like(probs, 1 / 3)
    assert cone_dc_loss(torch.zeros_like(logits), teacher, bank, probs, 0.07).item() == (
        pytest.approx(0.0, abs=1e-12)
    )
    for t in (logits, teacher, bank, probs):
        t.requires_grad_(True)
    cone_dc_loss(logits, teacher, bank, probs, 0.07).backward()
    assert logits.grad.abs().sum() > 0
    assert teacher.grad is None and bank.grad is None and probs.grad is None


def test_excluded_entries_are_left_out_of_both_losses() -> None:
    q, labels, bank, bank_labels = _data(5)
    g = torch.Generator().manual_seed(6)
    exclude = torch.rand(5, 12, generator=g) < 0.3
    q.requires_grad_(True)
    got = cone_neighbour_loss(q, labels, bank, bank_labels, 4, 0.1, exclude=exclude)
    expected = 0.0
    for i in range(5):
        keep = ~exclude[i]
        expected += slow_neighbour(
            q[i : i + 1].detach(),
            labels[i : i + 1].tolist(),
            bank[keep],
            bank_labels[keep].tolist(),
            4,
            0.1,
        )
    assert got.item() == pytest.approx(expected / 5, rel=1e-10)
    got.backward()
    assert bool(q.grad.isfinite().all()) and q.grad.abs().sum() > 0
    logits, teacher, dc_bank, probs = _dc_data(7)
    dc_exclude = torch.rand(4, 7, generator=g) < 0.3
    got = cone_dc_loss(logits, teacher, dc_bank, probs, 0.07, exclude=dc_exclude)
    expected = sum(
        slow_dc(
            logits[i : i + 1],
            teacher[i : i + 1],
            dc_bank[~dc_exclude[i]],
            probs[~dc_exclude[i]],
            0.07,
        )
        for i in range(4)
    )
    assert got.item() == pytest.approx(expected / 4, rel=1e-10)
