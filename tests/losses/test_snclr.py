import math

import pytest
import torch
import torch.nn.functional as F

from nbr_contrast.losses import info_nce, snclr_loss, snclr_weights


def _unit(v):
    return v / v.norm()


def slow_weights(y, neighbours_own):
    rows = []
    for i in range(y.shape[0]):
        sims = [float(_unit(y[i]) @ _unit(n)) for n in neighbours_own[i]]
        e = [math.exp(s) for s in sims]
        rows.append([x / sum(e) for x in e])
    return rows


def slow_snclr(q, y, keys, neighbours, tau, offset, weights=None):
    n, kk, _ = neighbours.shape
    columns = []
    for j in range(n):
        columns.append(keys[j])
        columns.extend(neighbours[j][m] for m in range(kk))
    if weights is None:
        weights = slow_weights(y, neighbours[offset : offset + q.shape[0]])
    total = 0.0
    for i in range(q.shape[0]):
        logits = [float(_unit(q[i]) @ _unit(c)) / tau for c in columns]
        log_z = math.log(sum(math.exp(v) for v in logits))
        own = (offset + i) * (kk + 1)
        row = -(logits[own] - log_z)
        for m in range(kk):
            row -= float(weights[i][m]) * (logits[own + 1 + m] - log_z)
        total += row
    return 2 * tau * total / q.shape[0]


def _data(seed: int, b: int = 3, n: int = 3, k: int = 2, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, d, generator=g, dtype=torch.float64)
    y = torch.randn(b, d, generator=g, dtype=torch.float64)
    keys = torch.randn(n, d, generator=g, dtype=torch.float64)
    neighbours = torch.randn(n, k, d, generator=g, dtype=torch.float64)
    return q, y, keys, neighbours


@pytest.mark.parametrize(("n", "offset"), [(3, 0), (6, 3), (6, 0)])
def test_matches_slow_formula(n: int, offset: int) -> None:
    q, y, keys, neighbours = _data(0, n=n)
    got = snclr_loss(q, y, keys, neighbours, 0.2, positive_offset=offset)
    assert got.item() == pytest.approx(slow_snclr(q, y, keys, neighbours, 0.2, offset), rel=1e-10)


def test_weights_match_slow_formula_and_sum_to_one() -> None:
    _, y, _, neighbours = _data(1)
    w = snclr_weights(y, neighbours)
    assert torch.allclose(w, torch.tensor(slow_weights(y, neighbours), dtype=torch.float64))
    assert torch.allclose(w.sum(dim=1), torch.ones(3, dtype=torch.float64))


def test_zero_weights_is_scaled_moco_v3_infonce_over_same_columns() -> None:
    q, _, keys, neighbours = _data(2, n=6)
    zeros = torch.zeros(3, 2, dtype=torch.float64)
    got = snclr_loss(q, None, keys, neighbours, 0.2, weights=zeros, positive_offset=3)
    columns = torch.cat([keys.unsqueeze(1), neighbours], dim=1).reshape(-1, 4)
    logits = F.normalize(q, dim=1) @ F.normalize(columns, dim=1).T / 0.2
    targets = (torch.arange(3) + 3) * 3
    assert torch.allclose(got, 2 * 0.2 * F.cross_entropy(logits, targets))


def test_no_neighbours_is_scaled_in_batch_infonce() -> None:
    q, y, keys, _ = _data(3)
    empty = torch.zeros(3, 0, 4, dtype=torch.float64)
    got = snclr_loss(q, y, keys, empty, 0.2)
    assert torch.allclose(got, 2 * 0.2 * info_nce(q, keys, None, 0.2))


def test_precomputed_weights_are_used() -> None:
    q, y, keys, neighbours = _data(4)
    w = torch.tensor([[0.3, 0.7], [1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    got = snclr_loss(q, None, keys, neighbours, 0.1, weights=w)
    assert got.item() == pytest.approx(slow_snclr(q, y, keys, neighbours, 0.1, 0, w), rel=1e-10)


def test_gradients_reach_q_and_y_not_keys() -> None:
    q, y, keys, neighbours = _data(5)
    for t in (q, y, keys, neighbours):
        t.requires_grad_(True)
    snclr_loss(q, y, keys, neighbours, 0.2).backward()
    assert q.grad.abs().sum() > 0 and y.grad.abs().sum() > 0
    assert keys.grad is None and neighbours.grad is None
    y.grad = None
    snclr_loss(q, y, keys, neighbours, 0.2, detach_weights=True).backward()
    assert y.grad is None


def test_bad_shapes_raise() -> None:
    q, y, keys, neighbours = _data(6)
    with pytest.raises(ValueError, match="positive_offset"):
        snclr_loss(q, y, keys, neighbours, 0.2, positive_offset=1)
    with pytest.raises(ValueError, match="weights"):
        snclr_loss(q, None, keys, neighbours, 0.2)
