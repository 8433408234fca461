from __future__ import annotations

import warnings
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from nbr_contrast.app.build import build_method
from nbr_contrast.methods import momentum

from .helpers import fit_small

CO2_SMALL = [
    "method=co2",
    "method.proj_hidden_dim=32",
    "method.proj_output_dim=16",
    "method.queue_size=64",
    "optim=sgd",
]


@pytest.mark.parametrize(("world", "accumulate"), [(1, 1), (8, 1), (4, 2)])
def test_learning_rate_scales_with_the_batch_the_trainer_runs(
    tiny_cfg: Callable[..., DictConfig], world: int, accumulate: int
) -> None:
    cfg = tiny_cfg("optim.lr=0.3", "data.batch_size=64")
    method = build_method(cfg)
    loader = DataLoader(range(100), batch_size=48)  # not data.batch_size: the loader counts
    method._trainer = SimpleNamespace(
        world_size=world, accumulate_grad_batches=accumulate, train_dataloader=loader
    )
    assert method.global_batch_size() == 48 * world * accumulate
    assert method.learning_rate() == pytest.approx(0.3 * 48 * world * accumulate / 256)
    unsized = DataLoader(range(100), batch_size=None)
    method._trainer = SimpleNamespace(
        world_size=1, accumulate_grad_batches=1, train_dataloader=unsized
    )
    with pytest.raises(ValueError, match=r"does not say its batch size.*optim.scale_lr=false"):
        method.learning_rate()


def test_ema_counts_optimiser_steps_not_batches(
    tiny_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []
    original = momentum.ema_update

    def counting(online, target, momentum, copy_buffers=False):
        calls.append(momentum)
        original(online, target, momentum, copy_buffers)

    monkeypatch.setattr(momentum, "ema_update", counting)
    cfg = tiny_cfg(*CO2_SMALL, "trainer.limit_train_batches=4", "trainer.accumulate_grad_batches=2")
    method, trainer = fit_small(cfg)
    assert trainer.global_step == 2
    # the EMA runs before the first forward after each optimiser step: once (for 2 pairs)
    assert len(calls) == 2
    assert int(method.ema_last_step) == 1

    calls.clear()
    method, trainer = fit_small(tiny_cfg(*CO2_SMALL, "trainer.limit_train_batches=4"))
    assert trainer.global_step == 4
    assert len(calls) == 3 * 2


def test_short_run_warns_that_the_momentum_encoder_keeps_its_init(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    with pytest.warns(UserWarning, match=r"holds 100% of its\s+random initialisation"):
        fit_small(tiny_cfg(*CO2_SMALL, "method.momentum=0.999", "method.final_momentum=0.999"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_small(tiny_cfg(*CO2_SMALL, "method.momentum=0.0", "method.final_momentum=0.0"))
    assert not [w for w in caught if "random initialisation" in str(w.message)]


def test_checkpoint_from_before_the_momentum_base_loads(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    # before MomentumMethod every method had an ema_last_step buffer
    nnclr = build_method(tiny_cfg("method=nnclr", "method.queue_size=64"))
    checkpoint = {"state_dict": {**nnclr.state_dict(), "ema_last_step": torch.tensor(7)}}
    nnclr.on_load_checkpoint(checkpoint)
    nnclr.load_state_dict(checkpoint["state_dict"], strict=True)
    co2 = build_method(tiny_cfg(*CO2_SMALL))
    checkpoint = {"state_dict": {**co2.state_dict(), "ema_last_step": torch.tensor(7)}}
    co2.on_load_checkpoint(checkpoint)
    co2.load_state_dict(checkpoint["state_dict"], strict=True)
    assert int(co2.ema_last_step) == 7
