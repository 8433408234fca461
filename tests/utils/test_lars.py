from __future__ import annotations

import pytest
import torch

from nbr_contrast.utils.lars import LARS


def solo_learn_step(
    params: list[torch.Tensor],
    buffers: list[torch.Tensor | None],
    lr: float,
    momentum: float,
    weight_decay: float,
    eta: float,
    clip_lr: bool,
    exclude_1d: bool,
) -> None:
    """solo-learn's LARS step, parameter by parameter, as its ``solo/utils/lars.py`` reads."""
    for i, p in enumerate(params):
        if p.grad is None:
            continue
        d_p = p.grad.clone()
        p_norm, g_norm = float(torch.norm(p)), float(torch.norm(p.grad))
        if (p.ndim != 1 or not exclude_1d) and p_norm != 0 and g_norm != 0:
            lars_lr = p_norm / (g_norm + p_norm * weight_decay + 1e-8) * eta
            if clip_lr:
                lars_lr = min(lars_lr / lr, 1.0)
            d_p = (d_p + weight_decay * p) * lars_lr
        buffers[i] = d_p.clone() if buffers[i] is None else buffers[i] * momentum + d_p
        p.data -= lr * buffers[i]


def test_trust_ratio_scales_the_update() -> None:
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ‖w‖ = 5
    w.grad = torch.tensor([0.0, 10.0])  # ‖g‖ = 10
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.1)
    opt.step()
    # update = lr · η‖w‖/‖g‖ · g = 0.05 · g
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 3.5]))


def test_clip_lr_caps_the_step_at_the_learning_rate() -> None:
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.0, 10.0])
    # η‖w‖/‖g‖ = 0.05 < lr = 1: the step is 0.05·g with or without clipping
    LARS([w], lr=1.0, momentum=0.0, eta=0.1, clip_lr=True).step()
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 3.5]))
    v = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    v.grad = torch.tensor([0.0, 10.0])
    # lr = 0.01 < 0.05: the trust ratio is capped, the step is lr·g (plain SGD)
    LARS([v], lr=0.01, momentum=0.0, eta=0.1, clip_lr=True).step()
    torch.testing.assert_close(v.detach(), torch.tensor([3.0, 3.9]))


def test_excluded_group_is_plain_sgd_without_decay() -> None:
    b = torch.nn.Parameter(torch.tensor([1.0]))
    b.grad = torch.tensor([2.0])
    opt = LARS([{"params": [b], "lars_exclude": True}], lr=0.5, weight_decay=1.0)
    opt.step()
    torch.testing.assert_close(b.detach(), torch.tensor([0.0]))


@pytest.mark.parametrize("clip_lr", [True, False])
def test_matches_solo_learn_over_steps_with_a_schedule(clip_lr: bool) -> None:
    torch.manual_seed(0)
    shapes = [(4, 3), (6, 2), (2, 2, 3), (3,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    params[1].data.zero_()  # ‖w‖ = 0: no decay, no adaptation on the first step
    ref = [p.detach().clone() for p in params]
    # the recipe's groups: decayed weights, then 1-D parameters excluded (exclude_bias_n_norm)
    opt = LARS(
        [{"params": params[:3]}, {"params": params[3:], "weight_decay": 0.0, "lars_exclude": True}],
        lr=0.4,
        momentum=0.9,
        weight_decay=1e-3,
        eta=0.02,
        clip_lr=clip_lr,
    )
    buffers: list[torch.Tensor | None] = [None] * len(params)
    for step, lr in enumerate([0.4, 0.1, 0.02, 0.3, 0.005]):
        for group in opt.param_groups:
            group["lr"] = lr
        grads = [torch.randn(s) * 10 ** (step - 2) for s in shapes]
        if step == 1:
            grads[2] = None  # a parameter without a gradient this step is left alone
        for p, r, g in zip(params, ref, grads, strict=True):
            p.grad = None if g is None else g.clone()
            r.grad = None if g is None else g.clone()
        opt.step()
        solo_learn_step(ref, buffers, lr, 0.9, 1e-3, 0.02, clip_lr, exclude_1d=True)
        for p, r in zip(params, ref, strict=True):
            torch.testing.assert_close(p.detach(), r, rtol=1e-5, atol=1e-6)
