import math

import pytest
import torch

from nbr_contrast.losses import clim_mix_loss, cutmix, info_nce, mixup


def _unit(v):
    return v / v.norm()


def slow_nce(q, k, queue, tau):
    pos = math.exp(float(_unit(q) @ _unit(k)) / tau)
    return -math.log(pos / (pos + sum(math.exp(float(_unit(q) @ _unit(n)) / tau) for n in queue)))


def _data(seed: int, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (4, 3), (4, 3), (5, 3)]
    return [
        torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=requires_grad)
        for s in shapes
    ]


def test_matches_slow_formula_per_sample_lambda() -> None:
    q, ka, kn, queue = _data(0)
    lam = torch.tensor([0.1, 0.5, 0.9, 0.3], dtype=torch.float64)
    expected = (
        sum(
            float(lam[i]) * slow_nce(q[i], ka[i], queue, 0.2)
            + (1 - float(lam[i])) * slow_nce(q[i], kn[i], queue, 0.2)
            for i in range(4)
        )
        / 4
    )
    assert clim_mix_loss(q, ka, kn, lam, queue, 0.2).item() == pytest.approx(expected, rel=1e-10)


def test_lambda_one_and_zero_are_plain_infonce() -> None:
    q, ka, kn, queue = _data(1)
    assert torch.allclose(clim_mix_loss(q, ka, kn, 1.0, queue, 0.2), info_nce(q, ka, queue, 0.2))
    assert torch.allclose(clim_mix_loss(q, ka, kn, 0.0, queue, 0.2), info_nce(q, kn, queue, 0.2))


def test_gradient_reaches_query_only() -> None:
    q, ka, kn, queue = _data(2, requires_grad=True)
    clim_mix_loss(q, ka, kn, 0.4, queue, 0.2).backward()
    assert q.grad.abs().sum() > 0
    assert ka.grad is None and kn.grad is None and queue.grad is None


def test_cutmix_lambda_is_pasted_area_fraction() -> None:
    g = torch.Generator().manual_seed(3)
    x_a = torch.zeros(64, 3, 8, 10)
    x_b = torch.ones(64, 3, 8, 10)
    lam = torch.rand(64, generator=g)
    mixed, corrected = cutmix(x_a, x_b, lam, generator=g)
    pasted = mixed[:, 0].flatten(1).mean(dim=1)
    assert torch.allclose(corrected, 1 - pasted)
    assert torch.equal(mixed[:, 0:1].expand_as(mixed), mixed)  # same box on every channel
    # box sides are floored and clipped, so the corrected λ is never below the request
    assert bool((corrected >= lam - 1e-6).all()) and bool((corrected <= 1).all())
    assert bool((corrected < 1).any())


def test_cutmix_extremes_and_box_is_a_rectangle() -> None:
    g = torch.Generator().manual_seed(4)
    x_a, x_b = torch.zeros(2, 1, 6, 6), torch.ones(2, 1, 6, 6)
    mixed, lam = cutmix(x_a, x_b, torch.tensor([1.0, 0.0]), generator=g)
    assert lam[0] == 1.0 and torch.equal(mixed[0], x_a[0])
    box = mixed[1, 0].bool()
    rows, cols = box.any(dim=1), box.any(dim=0)
    assert int(box.sum()) == int(rows.sum()) * int(cols.sum())
    assert lam[1].item() == pytest.approx(1 - box.float().mean().item())


def test_mixup_per_sample() -> None:
    x_a, x_b = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    mixed, lam = mixup(x_a, x_b, torch.tensor([0.25, 1.0]))
    assert torch.allclose(mixed[0], torch.full((1, 2, 2), 0.75))
    assert torch.allclose(mixed[1], torch.zeros(1, 2, 2))
    assert torch.equal(lam, torch.tensor([0.25, 1.0]))
