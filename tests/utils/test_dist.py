import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from nbr_contrast.losses import nnclr_loss
from nbr_contrast.utils.dist import gather_no_grad, gather_with_grad, is_dist, rank, world_size

WORLD = 2
BATCH = 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _simple_contrastive(anchors: torch.Tensor, columns: torch.Tensor, offset: int) -> torch.Tensor:
    logits = F.normalize(anchors, dim=1) @ F.normalize(columns, dim=1).T / 0.5
    targets = torch.arange(offset, offset + anchors.shape[0])
    return F.cross_entropy(logits, targets)


def _loss(case: str, weight: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, gather, offset):
    """Anchors from ``x1`` (local), columns from ``x2`` (gathered), both through ``weight``."""
    if case == "simple":
        return _simple_contrastive(x1 @ weight, gather(x2 @ weight), offset)
    # NNCLR: the anchors are constants (bank neighbours), the predictions carry gradient
    return nnclr_loss(x1, gather(x2 @ weight), 0.2, positive_offset=offset)


def _worker(local_rank: int, port: int, case: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=local_rank, world_size=WORLD)
    try:
        assert is_dist() and world_size() == WORLD and rank() == local_rank
        g = torch.Generator().manual_seed(0)
        weight0 = torch.randn(4, 4, generator=g, dtype=torch.float64)
        x1 = torch.randn(WORLD * BATCH, 4, generator=g, dtype=torch.float64)
        x2 = torch.randn(WORLD * BATCH, 4, generator=g, dtype=torch.float64)

        # reference: one process on the concatenated batch
        weight = weight0.clone().requires_grad_(True)
        _loss(case, weight, x1, x2, lambda t: t, 0).backward()
        reference = weight.grad.clone()

        # distributed: local slice, per-rank mean loss, DDP-style gradient averaging
        mine = slice(local_rank * BATCH, (local_rank + 1) * BATCH)
        weight = weight0.clone().requires_grad_(True)
        gathered = gather_with_grad(x2[mine] @ weight)
        assert torch.allclose(gathered, x2 @ weight0)
        loss = _loss(case, weight, x1[mine], x2[mine], gather_with_grad, local_rank * BATCH)
        loss.backward()
        grad = weight.grad.clone()
        dist.all_reduce(grad)
        grad /= WORLD
        assert torch.allclose(grad, reference, atol=1e-12), (grad, reference)

        plain = gather_no_grad(x1[mine].requires_grad_(True))
        assert torch.equal(plain, x1) and not plain.requires_grad
    finally:
        dist.destroy_process_group()


def _spawn(case: str) -> None:
    mp.spawn(_worker, args=(_free_port(), case), nprocs=WORLD, join=True)


def test_gather_with_grad_matches_single_process_gradient() -> None:
    _spawn("simple")


def test_nnclr_loss_with_offset_matches_single_process_gradient() -> None:
    _spawn("nnclr")


def test_single_process_helpers() -> None:
    assert not is_dist() and world_size() == 1 and rank() == 0
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    plain = gather_no_grad(x)
    assert torch.equal(plain, x) and not plain.requires_grad
