"""Steady-state training steps never read a device value back to the host.

Every ``.item()``, ``int()``, ``float()`` or ``bool()`` of a tensor dispatches
``aten::_local_scalar_dense``; on a GPU each one makes the host wait for the device. The
tests count those dispatches (and ``torch.cuda.synchronize`` calls) over 20 training steps
after three warm-up steps, in a real fit of every method on the built-in data, with
``log_every_n_steps`` larger than the run so no step is a logging step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import DictConfig
from torch.utils._python_dispatch import TorchDispatchMode

from nbr_contrast.app.build import build_datamodule, build_method, build_trainer

from ..runs import PX16

WARMUP = 3
STEPS = 20
METHODS = ("nnclr", "co2", "mocov2", "snclr", "mocov3", "clim", "cone", "supervised", "msf", "byol")
SMALL = {
    "nnclr": ["method.queue_size=64"],
    # FAISS on the CPU (search=auto there) counts skipped entries on the host; banks on a
    # GPU, and search=torch, mask them on the device
    "snclr": ["method.queue_size=64", "search=torch"],
    "clim": ["method.warmup_epochs=0"],
    "cone": ["method.k=16"],  # the bank is one epoch of 24 batches of 8
    "msf": ["method.queue_size=64"],
}


class HostReads(TorchDispatchMode):
    """Counts ``_local_scalar_dense`` dispatches while ``counting`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = False
        self.reads = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if self.counting and func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


class SteadySteps(L.Callback):
    """Turns counting on from step ``WARMUP`` to the end of step ``WARMUP + STEPS - 1``."""

    def __init__(self, mode: HostReads) -> None:
        self.mode = mode
        self.counted: list[int] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if WARMUP <= trainer.global_step < WARMUP + STEPS:
            self.mode.counting = True
            self.counted.append(trainer.global_step)
        else:
            self.mode.counting = False


@pytest.mark.parametrize("method", METHODS)
def test_steady_state_steps_never_wait_for_the_device(
    method: str, tiny_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_cfg(
        *PX16,
        f"method={method}",
        *SMALL.get(method, []),
        "data.pipeline=gpu",
        f"trainer.limit_train_batches={WARMUP + STEPS + 1}",
        "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=1000",
        "data.batch_size=8",
    )
    syncs: list[int] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: syncs.append(1))
    mode = HostReads()
    steady = SteadySteps(mode)
    L.seed_everything(0)
    trainer = build_trainer(cfg)
    trainer.callbacks.append(steady)
    with mode:
        trainer.fit(build_method(cfg), datamodule=build_datamodule(cfg))
    assert steady.counted == list(range(WARMUP, WARMUP + STEPS))
    assert mode.reads == 0
    assert syncs == []


def test_the_counter_sees_an_item_call(tiny_cfg: Callable[..., DictConfig]) -> None:
    mode = HostReads()
    with mode:
        mode.counting = True
        x = torch.ones(3)
        float(x.sum())
        bool(x.any())
    assert mode.reads == 2
