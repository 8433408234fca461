import math

import pytest
import torch

from nbr_contrast.losses import nnclr_loss


def slow_nnclr(nn, p, tau, offset):
    total = 0.0
    for i in range(nn.shape[0]):
        a = nn[i] / nn[i].norm()
        logits = [float(a @ (p[j] / p[j].norm())) / tau for j in range(p.shape[0])]
        total += -logits[offset + i] + math.log(sum(math.exp(v) for v in logits))
    return total / nn.shape[0]


@pytest.mark.parametrize("offset", [0, 3, 6])
def test_matches_slow_formula(offset: int) -> None:
    g = torch.Generator().manual_seed(1)
    nn = torch.randn(3, 5, generator=g, dtype=torch.float64)
    p = torch.randn(9, 5, generator=g, dtype=torch.float64)
    got = nnclr_loss(nn, p, 0.2, positive_offset=offset)
    assert got.item() == pytest.approx(slow_nnclr(nn, p, 0.2, offset), rel=1e-10)


def test_hand_computed_tiny_case() -> None:
    nn = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    # row 0: logits [1, 0]; row 1: logits [0, 1]; τ = 1
    expected = -math.log(math.e / (math.e + 1.0))
    assert nnclr_loss(nn, p, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_offset_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="positive_offset"):
        nnclr_loss(torch.randn(3, 4), torch.randn(5, 4), 0.1, positive_offset=3)


def test_gradients() -> None:
    g = torch.Generator().manual_seed(2)
    nn = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nnclr_loss(a, b, 0.5, positive_offset=2), (nn, p))
    nnclr_loss(nn, p, 0.5, positive_offset=2).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    # the caller detaches NN(z): then only p receives gradient
    p.grad = None
    nn_const = nn.detach()
    nnclr_loss(nn_const, p, 0.5).backward()
    assert nn_const.grad is None and p.grad.abs().sum() > 0
