import math

import pytest
import torch

from nbr_contrast.losses import info_nce, moco_logits


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def slow_info_nce(q, k, queue, tau):
    losses = []
    for i in range(q.shape[0]):
        qi = _unit(q[i])
        pos = math.exp(float(qi @ _unit(k[i])) / tau)
        negs = queue if queue is not None else [k[j] for j in range(k.shape[0]) if j != i]
        denom = pos + sum(math.exp(float(qi @ _unit(n)) / tau) for n in negs)
        losses.append(-math.log(pos / denom))
    return losses


@pytest.mark.parametrize("with_queue", [True, False])
def test_matches_slow_formula(with_queue: bool) -> None:
    g = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(5, 4, generator=g, dtype=torch.float64),
        torch.randn(5, 4, generator=g, dtype=torch.float64),
    )
    queue = torch.randn(7, 4, generator=g, dtype=torch.float64) if with_queue else None
    expected = slow_info_nce(q, k, queue, 0.3)
    per = info_nce(q, k, queue, 0.3, reduction="none")
    assert torch.allclose(per, torch.tensor(expected, dtype=torch.float64))
    assert torch.allclose(info_nce(q, k, queue, 0.3), per.mean())
    assert torch.allclose(info_nce(q, k, queue, 0.3, reduction="sum"), per.sum())


def test_hand_computed_tiny_case() -> None:
    q = torch.tensor([[2.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 3.0], [-1.0, 0.0]])
    # cosines: positive 1, negatives 0 and -1; τ = 1
    expected = -math.log(math.e / (math.e + 1.0 + math.exp(-1.0)))
    assert info_nce(q, k, queue, 1.0).item() == pytest.approx(expected, rel=1e-6)
    logits = moco_logits(q, k, queue, 0.5)
    assert torch.allclose(logits, torch.tensor([[2.0, 0.0, -2.0]]))
