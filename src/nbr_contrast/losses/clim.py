"""CLIM local-mixture loss and image mixers (Li, Xiong, Zhang, BMVC 2021, arXiv 2011.02697)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _per_sample(lam: float | Tensor, batch: int, like: Tensor) -> Tensor:
    """``λ`` as a ``[B]`` tensor on ``like``'s device, in its dtype if floating (else float32)."""
    dtype = like.dtype if like.is_floating_point() else torch.float32
    lam_t = torch.as_tensor(lam, dtype=dtype, device=like.device)
    return lam_t.expand(batch) if lam_t.dim() == 0 else lam_t.reshape(batch)


def clim_mix_loss(
    q_mix: Tensor,
    k_anchor: Tensor,
    k_neighbour: Tensor,
    lam: float | Tensor,
    queue: Tensor,
    temperature: float,
) -> Tensor:
    """Local image-mixture loss: InfoNCE of the mixed query against both source keys.

    ::

        L = mean_i [ λ_i·InfoNCE(x̃_i; k_i) + (1 − λ_i)·InfoNCE(x̃_i; k_j(i)) ]
        InfoNCE(q; k) = −log exp(q·k/τ) / (exp(q·k/τ) + Σ_{n∈queue} exp(q·n/τ))

    where ``x̃_i`` mixes anchor ``i`` (share ``λ_i``) with its selected neighbour ``j(i)``.
    The queue is shared by both terms. Vectors are L2-normalised here; keys and queue are
    constants (detached). The plain MoCo loss on the unmixed views is added by the caller.
    Unconfirmed detail: the paper does not say whether ``λ`` is per sample or per batch;
    both are accepted.

    Args:
        q_mix: Queries of the mixed images ``[B, D]``.
        k_anchor: Momentum keys of the anchors ``[B, D]``.
        k_neighbour: Momentum keys of the mixed-in neighbours ``[B, D]``.
        lam: Anchor share ``λ``: a float for the whole batch or per-sample ``[B]`` (the
            area-corrected value returned by :func:`cutmix`).
        queue: Negative keys ``[K, D]``.
        temperature: ``τ``.

    Returns:
        Scalar batch-mean loss.
    """
    q = F.normalize(q_mix, dim=1)
    queue = F.normalize(queue.detach(), dim=1)
    negatives = q @ queue.T / temperature

    def nce(k: Tensor) -> Tensor:
        positive = (q * F.normalize(k.detach(), dim=1)).sum(dim=1, keepdim=True) / temperature
        return torch.logsumexp(torch.cat([positive, negatives], dim=1), dim=1) - positive[:, 0]

    lam_t = _per_sample(lam, q.shape[0], q)
    return (lam_t * nce(k_anchor) + (1 - lam_t) * nce(k_neighbour)).mean()


def cutmix(
    x_a: Tensor,
    x_b: Tensor,
    lam: float | Tensor,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """CutMix (Yun et al., ICCV 2019): paste a box of ``x_b`` into ``x_a``, per sample.

    For sample ``i`` the box has side ratio ``sqrt(1 − λ_i)`` of the image and a centre
    drawn uniformly over the image; it is clipped at the borders, so the returned ``λ`` is
    recomputed as the fraction of ``x_a`` that survives: ``λ_i = 1 − area_i / (H·W)``.
    CLIM's use of CutMix (rather than another mixer) and its per-sample boxes are
    **unconfirmed** details of the paper; :func:`mixup` is the alternative.

    Args:
        x_a: Anchor images ``[B, C, H, W]``.
        x_b: Images to paste from ``[B, C, H, W]``.
        lam: Requested anchor share (e.g. a draw from ``Beta(α, α)``), a float or ``[B]``.
        generator: Random generator for the box centres (its device is used for drawing).

    Returns:
        ``(mixed [B, C, H, W], λ [B])`` with ``λ`` area-corrected (``x_a``'s dtype if floating,
        else float32); works for any image dtype, uint8 included.
    """
    b, _, h, w = x_a.shape
    lam_t = _per_sample(lam, b, x_a).clamp(0.0, 1.0)
    ratio = (1.0 - lam_t).sqrt()
    cut_h = (ratio * h).long()
    cut_w = (ratio * w).long()
    draw_device = generator.device if generator is not None else x_a.device
    centres = torch.rand(b, 2, generator=generator, device=draw_device).to(x_a.device)
    cy = (centres[:, 0] * h).long()
    cx = (centres[:, 1] * w).long()
    y1, y2 = (cy - cut_h // 2).clamp(0, h), (cy - cut_h // 2 + cut_h).clamp(0, h)
    x1, x2 = (cx - cut_w // 2).clamp(0, w), (cx - cut_w // 2 + cut_w).clamp(0, w)
    rows = torch.arange(h, device=x_a.device)
    cols = torch.arange(w, device=x_a.device)
    in_rows = (rows >= y1[:, None]) & (rows < y2[:, None])
    in_cols = (cols >= x1[:, None]) & (cols < x2[:, None])
    box = in_rows[:, :, None] & in_cols[:, None, :]
    mixed = torch.where(box[:, None], x_b, x_a)
    corrected = 1.0 - box.flatten(1).to(lam_t.dtype).mean(dim=1)
    return mixed, corrected


def mixup(x_a: Tensor, x_b: Tensor, lam: float | Tensor) -> tuple[Tensor, Tensor]:
    """Mixup (Zhang et al., ICLR 2018): ``x̃_i = λ_i·x_a,i + (1 − λ_i)·x_b,i``, per sample.

    Args:
        x_a: Anchor images ``[B, C, H, W]`` (any ``[B, ...]`` shape works).
        x_b: Images to blend in, same shape.
        lam: Anchor share, a float or ``[B]``.

    Returns:
        ``(mixed, λ [B])``; ``λ`` is returned unchanged (as a tensor) so that callers can
        treat mixup and :func:`cutmix` alike.
    """
    lam_t = _per_sample(lam, x_a.shape[0], x_a)
    shape = (-1,) + (1,) * (x_a.dim() - 1)
    return lam_t.view(shape) * x_a + (1 - lam_t.view(shape)) * x_b, lam_t
