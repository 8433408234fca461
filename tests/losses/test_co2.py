import math

import pytest
import torch

from nbr_contrast.losses import co2_consistency, info_nce, moco_infonce


def _unit(v):
    return v / v.norm()


def _softmax(values):
    m = max(values)
    e = [math.exp(v - m) for v in values]
    s = sum(e)
    return [x / s for x in e]


def slow_consistency(q, k, queue, tau):
    total = 0.0
    for i in range(q.shape[0]):
        qs = [float(_unit(q[i]) @ _unit(n)) / tau for n in queue]
        ks = [float(_unit(k[i]) @ _unit(n)) / tau for n in queue]
        Q, P = _softmax(qs), _softmax(ks)
        kl_pq = sum(p * math.log(p / qq) for p, qq in zip(P, Q, strict=True))
        kl_qp = sum(qq * math.log(qq / p) for p, qq in zip(P, Q, strict=True))
        total += 0.5 * kl_pq + 0.5 * kl_qp
    return total / q.shape[0]


def _data(seed: int, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=requires_grad)
    k = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=requires_grad)
    queue = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=requires_grad)
    return q, k, queue


def test_consistency_matches_slow_formula() -> None:
    q, k, queue = _data(0)
    got = co2_consistency(q, k, queue, 0.2)
    assert got.item() == pytest.approx(slow_consistency(q, k, queue, 0.2), rel=1e-10)


def test_instance_loss_is_moco_infonce() -> None:
    q, k, queue = _data(1)
    assert torch.allclose(moco_infonce(q, k, queue, 0.2), info_nce(q, k, queue, 0.2))


def test_consistency_nonnegative_and_zero_when_q_equals_k() -> None:
    q, k, queue = _data(2)
    assert co2_consistency(q, k, queue, 0.05).item() >= 0.0
    assert co2_consistency(q, q.clone(), queue, 0.05).item() == pytest.approx(0.0, abs=1e-12)
    # scale invariance: only directions matter
    assert co2_consistency(q, 3.0 * q, queue, 0.05).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_reaches_q_only() -> None:
    q, k, queue = _data(3, requires_grad=True)
    (moco_infonce(q, k, queue, 0.2) + co2_consistency(q, k, queue, 0.1)).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None or k.grad.abs().sum() == 0
    assert queue.grad is None or queue.grad.abs().sum() == 0
    q.grad = None
    co2_consistency(q, k, queue, 0.1).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_consistency_gradcheck() -> None:
    q, k, queue = _data(4)
    q.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: co2_consistency(x, k, queue, 0.3), (q,))
