"""The non-finite guard's device-side record."""

from __future__ import annotations

import torch

from nbr_contrast.methods.guard import FiniteGuard


def test_nothing_recorded_while_losses_are_finite() -> None:
    guard = FiniteGuard(("loss", "probe_loss"))
    assert guard.read() is None
    guard.update((torch.tensor(1.0), torch.tensor(2.0)), step=0, epoch=0)
    assert guard.read() is None


def test_the_first_bad_step_and_its_terms_are_kept() -> None:
    guard = FiniteGuard(("loss", "probe_loss"))
    guard.update((torch.tensor(1.0), torch.tensor(2.0)), step=4, epoch=0)
    guard.update((torch.tensor(float("nan")), torch.tensor(3.0)), step=5, epoch=1)
    guard.update((torch.tensor(float("inf")), torch.tensor(4.0)), step=6, epoch=1)
    found = guard.read()
    assert found is not None
    assert (found.step, found.epoch) == (5, 1)
    assert found.terms["probe_loss"] == 3.0 and found.terms["loss"] != found.terms["loss"]
    guard.reset()
    assert guard.read() is None
