"""Two-process gloo harness: a SyncBatchNorm stand-in for CPU and one real training step.

``torch.nn.SyncBatchNorm`` refuses CPU tensors ("SyncBatchNorm expected input tensor to be
on GPU"), so the equivalence tests replace every BatchNorm by :class:`GatheredBatchNorm`,
which does what SyncBN does on GPUs: train-mode statistics (and running-stat updates) over
the concatenated batch of every rank, with gradient flowing back to every rank. On one
process it is exactly the plain BatchNorm, so both sides of a comparison run the same
modules.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from nbr_contrast import api
from nbr_contrast.app.build import build_method
from nbr_contrast.methods.base import BaseMethod
from nbr_contrast.neighbours.callback import NeighbourIndexCallback
from nbr_contrast.utils.dist import gather_no_grad, gather_with_grad, rank

WORLD = 2
SMALL = [
    "search=torch",
    "trainer.accelerator=cpu",
    "data.num_workers=0",
    "plots=false",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_gloo(local_rank: int, port: int) -> None:
    """Join a 2-process gloo group on 127.0.0.1; a stuck collective fails after 2 minutes."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(
        "gloo", rank=local_rank, world_size=WORLD, timeout=datetime.timedelta(minutes=2)
    )


class GatheredBatchNorm(nn.Module):
    """SyncBatchNorm for CPU processes: statistics over the batch of every rank.

    Args:
        bn: The BatchNorm layer it wraps (its parameters and running statistics are used).
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the gathered batch, return this rank's rows."""
        if not self.bn.training:
            return self.bn(x)
        full = self.bn(gather_with_grad(x))
        start = rank() * x.shape[0] if full.shape[0] != x.shape[0] else 0
        return full[start : start + x.shape[0]]


def gathered_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` (in place) by :class:`GatheredBatchNorm`."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, GatheredBatchNorm(child))
        elif not isinstance(child, GatheredBatchNorm):  # shared modules are seen twice
            gathered_batchnorm(child)
    return module


def compose(overrides: list[str], out: str) -> DictConfig:
    """A run config composed as the CLI does, with the harness's small settings."""
    return api.compose([*SMALL, *overrides], output_dir=out)


def build(cfg: DictConfig, prefill: int = 0) -> tuple[BaseMethod, NeighbourIndexCallback]:
    """The method (seeded init, gathered BN) with its neighbour index attached.

    Args:
        cfg: Run config.
        prefill: Entries written into every bank first, identically on every process
            (seeded), so neighbour terms see real labels and probabilities.
    """
    torch.manual_seed(0)
    method = gathered_batchnorm(build_method(cfg))
    torch.manual_seed(1)  # the banks' random initial entries derive from this seed
    callback = NeighbourIndexCallback(**OmegaConf.to_container(cfg.search), seed=0)
    callback.build(method)
    assert callback.index is not None
    g = torch.Generator().manual_seed(2)
    for bank in callback.index.banks.values():
        if not prefill:
            break
        emb = torch.nn.functional.normalize(torch.randn(prefill, bank.dim, generator=g), dim=1)
        payloads: dict[str, Tensor] = {}
        for key, spec in bank.specs.items():
            if spec.dtype == torch.long:
                payloads[key] = torch.randint(0, 10, (prefill, *spec.shape), generator=g)
            else:
                payloads[key] = torch.randn(prefill, *spec.shape, generator=g).softmax(-1)
        bank.enqueue(emb, **payloads)
    return method, callback


def make_batch(sizes: list[int], n: int, seed: int = 3) -> dict[str, Any]:
    """A fixed batch of ``n`` samples: one random image tensor per view size."""
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 3, s, s, generator=g) for s in sizes]
    return {
        "views": views,
        "label": torch.randint(0, 10, (n,), generator=g),
        "sample_id": torch.arange(1000, 1000 + n),
    }


def shard(batch: dict[str, Any], local_rank: int, world: int = WORLD) -> dict[str, Any]:
    """Rank ``local_rank``'s contiguous slice of ``batch`` (as a distributed sampler would)."""
    n = batch["label"].shape[0] // world
    part = slice(local_rank * n, (local_rank + 1) * n)
    return {
        "views": [v[part] for v in batch["views"]],
        "label": batch["label"][part],
        "sample_id": batch["sample_id"][part],
    }


def train_step(
    method: BaseMethod, callback: NeighbourIndexCallback, batch: dict[str, Any], lr: float
) -> dict[str, Any]:
    """One real training step: ``training_step``, backward, DDP's gradient average, SGD, enqueue.

    Gradients are averaged over ranks as DDP does (all-reduce sum / W); a parameter that
    gets no gradient on a rank contributes zeros. Returns the loss (averaged over ranks),
    each parameter's update and each bank's state after the callback enqueued the step.
    """
    method.train()
    before = {k: p.detach().clone() for k, p in method.named_parameters()}
    out = method.training_step(batch, 0)
    out["loss"].backward()
    loss = out["loss"].detach().clone()
    if dist.is_initialized():
        for p in method.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= WORLD
        dist.all_reduce(loss)
        loss /= WORLD
    torch.optim.SGD(method.parameters(), lr=lr).step()
    updates = {k: p.detach() - before[k] for k, p in method.named_parameters()}
    callback.on_train_batch_end(None, method, out, None, 0)  # type: ignore[arg-type]
    assert callback.index is not None
    banks = {
        name: {"embeddings": b.embeddings.clone(), **{k: v.clone() for k, v in b.payloads.items()}}
        for name, b in callback.index.banks.items()
    }
    return {"loss": float(loss), "updates": updates, "banks": banks}


def same_on_all_ranks(x: Tensor) -> bool:
    """Whether ``x`` is bitwise identical on every rank (call on every rank)."""
    parts = gather_no_grad(x.unsqueeze(0))
    return all(torch.equal(parts[0], p) for p in parts[1:])
