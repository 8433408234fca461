from __future__ import annotations

import itertools
import math

import pytest
import torch

from nbr_contrast.utils.lars import LARS
from nbr_contrast.utils.schedules import cosine_momentum, warmup_cosine


def test_warmup_is_linear_then_cosine_reaches_min() -> None:
    values = [warmup_cosine(s, 100, 10, min_ratio=0.1) for s in range(101)]
    assert values[0] == pytest.approx(1 / 11)
    assert values[9] == pytest.approx(10 / 11)
    assert values[10] == pytest.approx(1.0)
    assert values[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert values[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


def test_cosine_momentum_endpoints() -> None:
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)


def test_lars_trust_ratio_scales_update() -> None:
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ‖w‖ = 5
    w.grad = torch.tensor([0.0, 10.0])  # ‖g‖ = 10
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.1)
    opt.step()
    # update = lr · eta·‖w‖/‖g‖ · g = 0.05 · g
    assert torch.allclose(w.detach(), torch.tensor([3.0, 3.5]))


def test_lars_excluded_group_is_plain_sgd() -> None:
    b = torch.nn.Parameter(torch.tensor([1.0]))
    b.grad = torch.tensor([2.0])
    opt = LARS([{"params": [b], "lars_exclude": True}], lr=0.5, weight_decay=1.0)
    opt.step()
    assert torch.allclose(b.detach(), torch.tensor([0.0]))
