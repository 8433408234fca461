from __future__ import annotations

import pytest
import torch
from torch import nn

from nbr_contrast.methods.momentum import ema_update, momentum_copy


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


@pytest.mark.parametrize("copy_buffers", [False, True])
def test_ema_update_averages_parameters_and_copies_buffers_on_request(copy_buffers: bool) -> None:
    online = small_net()
    target = momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    before = [p.detach().clone() for p in target.parameters()]
    own = [b.clone() for b in target.buffers()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    online(torch.randn(8, 3))  # training-mode forward moves the BN statistics
    ema_update(online, target, 0.9, copy_buffers=copy_buffers)
    for t, o, b in zip(target.parameters(), online.parameters(), before, strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o.detach())
    expected = list(online.buffers()) if copy_buffers else own
    for t, e in zip(target.buffers(), expected, strict=True):
        assert torch.equal(t, e)


def test_ema_update_rejects_mismatched_modules() -> None:
    with pytest.raises(ValueError, match="different parameters or buffers"):
        ema_update(small_net(), nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), 0.9)
