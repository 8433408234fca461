from __future__ import annotations

import torch

from nbr_contrast.utils.lars import LARS


def reference_lars_step(
    params: list[torch.Tensor],
    buffers: list[torch.Tensor | None],
    lr: float,
    momentum: float,
    weight_decay: float,
    eta: float,
    exclude: bool,
) -> None:
    """One LARS step written parameter by parameter (the textbook loop)."""
    for i, p in enumerate(params):
        if p.grad is None:
            continue
        g = p.grad.clone()
        if not exclude:
            g = g + weight_decay * p
            w_norm, g_norm = float(p.norm()), float(g.norm())
            if w_norm > 0 and g_norm > 0:
                g = g * (eta * w_norm / g_norm)
        buffers[i] = g.clone() if buffers[i] is None else buffers[i] * momentum + g
        p.data -= lr * buffers[i]


def test_lars_trust_ratio_scales_update() -> None:
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ‖w‖ = 5
    w.grad = torch.tensor([0.0, 10.0])  # ‖g‖ = 10
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.1)
    opt.step()
    # update = lr · eta·‖w‖/‖g‖ · g = 0.05 · g
    assert torch.allclose(w.detach(), torch.tensor([3.0, 3.5]))


def test_lars_excluded_group_is_plain_sgd() -> None:
    b = torch.nn.Parameter(torch.tensor([1.0]))
    b.grad = torch.tensor([2.0])
    opt = LARS([{"params": [b], "lars_exclude": True}], lr=0.5, weight_decay=1.0)
    opt.step()
    assert torch.allclose(b.detach(), torch.tensor([0.0]))


def test_lars_matches_per_parameter_loop_over_steps() -> None:
    torch.manual_seed(0)
    shapes = [(4, 3), (5,), (2, 2, 3), (3,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    params[1].data.zero_()  # ‖w‖ = 0: trust ratio 1
    ref = [p.detach().clone() for p in params]
    decay, no_decay = [params[0], params[1], params[2]], [params[3]]
    opt = LARS(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}],
        lr=0.3,
        momentum=0.9,
        weight_decay=0.01,
        eta=0.02,
    )
    ref_buffers: list[torch.Tensor | None] = [None] * len(params)
    for step in range(4):
        grads = [torch.randn(s) for s in shapes]
        if step == 1:
            grads[2] = None  # a parameter without a gradient this step is left alone
        for p, r, g in zip(params, ref, grads, strict=True):
            p.grad = None if g is None else g.clone()
            r.grad = None if g is None else g.clone()
        opt.step()
        head = ref_buffers[:3]
        reference_lars_step(ref[:3], head, 0.3, 0.9, 0.01, 0.02, exclude=False)
        tail = ref_buffers[3:]
        reference_lars_step(ref[3:], tail, 0.3, 0.9, 0.0, 0.02, exclude=True)
        ref_buffers = head + tail
        for p, r in zip(params, ref, strict=True):
            torch.testing.assert_close(p.detach(), r, rtol=1e-6, atol=1e-6)
