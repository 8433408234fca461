import pytest
import torch
import torch.nn.functional as F

from nbr_contrast.losses import msf_loss, msf_neighbours


def unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def slow_msf(q: torch.Tensor, nb: torch.Tensor) -> float:
    total = 0.0
    for i in range(q.shape[0]):
        total += (
            sum(float(((q[i] - nb[i, j]) ** 2).sum()) for j in range(nb.shape[1])) / nb.shape[1]
        )
    return total / q.shape[0]


@pytest.mark.parametrize("k", [1, 3])
def test_matches_slow_formula(k: int) -> None:
    q, nb = unit(4, 6, seed=0), unit(4, k, 6, seed=1)
    assert msf_loss(q, nb).item() == pytest.approx(slow_msf(q, nb), rel=1e-12)


def test_k1_with_the_target_is_byol_loss() -> None:
    q, t = unit(5, 8, seed=2), unit(5, 8, seed=3)
    byol = (2 - 2 * (q * t).sum(1)).mean()
    torch.testing.assert_close(msf_loss(q, t[:, None]), byol)
    assert msf_loss(t, t[:, None]).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_reaches_the_query_only() -> None:
    q = unit(3, 4, seed=4).requires_grad_()
    nb = unit(3, 2, 4, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: msf_loss(a, nb), (q,))
    msf_loss(q, nb).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert nb.grad is None


def slow_neighbours(t: torch.Tensor, memory: torch.Tensor, k: int) -> torch.Tensor:
    out = []
    for i in range(t.shape[0]):
        dist = [float(2 - 2 * t[i] @ m) for m in memory]
        order = sorted(range(len(dist)), key=lambda j: dist[j])[:k]
        out.append(memory[order])
    return torch.stack(out)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_neighbours_are_the_top_k_of_bank_and_batch(k: int) -> None:
    bank, batch = unit(10, 5, seed=6), unit(6, 5, seed=7)
    t = batch[2:5]  # this rank's targets among the batch of all ranks
    bank_sims, rows = (t @ bank.T).topk(k, dim=1)
    got, picked = msf_neighbours(t, bank_sims, bank[rows], batch)
    torch.testing.assert_close(got, slow_neighbours(t, torch.cat([bank, batch]), k))
    # each target is its own nearest neighbour, taken from the batch
    assert torch.equal(picked[:, 0], torch.arange(2, 5) + k)


def test_neighbours_from_the_bank_when_closer_than_the_batch() -> None:
    t = unit(2, 4, seed=8)
    bank = torch.stack([t[1], -t[0]])  # an old copy of target 1
    sims, rows = (t @ bank.T).topk(2, dim=1)
    got, picked = msf_neighbours(t, sims, bank[rows], t)
    # target 1: its old copy in the bank (row 0) and itself in the batch (2 + 1), both sim 1
    assert sorted(picked[1].tolist()) == [0, 3]
    torch.testing.assert_close(got[1], torch.stack([t[1], t[1]]))
