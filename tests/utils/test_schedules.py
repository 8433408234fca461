from __future__ import annotations

import itertools
import math

import pytest

from nbr_contrast.utils.schedules import cosine_momentum, ema_initial_share, warmup_cosine


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


def test_ema_initial_share_is_the_product_of_momenta() -> None:
    assert ema_initial_share(101, 0.99, 0.99) == pytest.approx(0.99**100)
    assert ema_initial_share(50, 1.0, 1.0) == 1.0
    slow = math.prod(cosine_momentum(t, 300, 0.9, 1.0) for t in range(1, 300))
    assert ema_initial_share(300, 0.9, 1.0) == pytest.approx(slow)
    # longer schedules forget the initialisation
    assert ema_initial_share(10_000, 0.996) < 1e-6 < ema_initial_share(1_000, 0.996)


def test_per_epoch_cosine_follows_cones_official_schedule() -> None:
    # 10 epochs of 7 steps, 2 warm-up epochs, final lr = base / 1000 (CoNe's cone_train.py)
    epochs, spe, warm, floor = 10, 7, 2, 1e-3
    for step in range(warm * spe, epochs * spe):
        t = step // spe - warm
        official = floor + 0.5 * (1 - floor) * (1 + math.cos(math.pi * t / (epochs - warm)))
        got = warmup_cosine(step, epochs * spe, warm * spe, floor, steps_per_epoch=spe)
        assert got == pytest.approx(official)
    assert warmup_cosine(3, epochs * spe, warm * spe, floor, steps_per_epoch=spe) == (
        pytest.approx(4 / 15)
    )
