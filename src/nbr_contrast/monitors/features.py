"""Feature extraction through a frozen backbone.

Batches are dicts with keys ``"image"`` (float tensor ``[B, 3, H, W]``), ``"label"`` and
``"sample_id"`` (dataset position of each sample), as yielded by the package's data loaders.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the ``with`` block.

    The train/eval flag of every submodule is recorded and restored afterwards, so a
    module that was partly in eval mode (e.g. frozen batch norm) comes back unchanged.
    Gradients are not switched off here: wrap the forward passes in ``torch.no_grad()``.

    Args:
        module: The network to switch to eval mode temporarily.

    Yields:
        The same module, in eval mode.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def embed(backbone: nn.Module, images: Tensor) -> Tensor:
    """Run ``backbone`` on ``images`` and return flat float32 features ``[B, F]``."""
    return torch.flatten(backbone(images), 1).float()


def batch_tensors(batch: Mapping[str, Any], device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Images on ``device`` and integer labels on ``device`` from one loader batch."""
    images = batch["image"].to(device, non_blocking=True)
    labels = torch.as_tensor(batch["label"]).long().to(device, non_blocking=True)
    return images, labels


def progress_bar(disable: bool) -> Progress:
    """A transient rich progress bar (a no-op display when ``disable`` is true)."""
    return Progress(
        TextColumn("[bold cyan]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=True,
        disable=disable,
    )


def _num_batches(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def extract_features(
    backbone: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    device: torch.device | str,
    normalize: bool = False,
    max_items: int | None = None,
    progress: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Embed every sample of ``loader`` with ``backbone`` in eval mode, without gradients.

    Args:
        backbone: Network mapping images ``[B, 3, H, W]`` to features (flattened to
            ``[B, F]``); it must already live on ``device``.
        loader: Iterable of batch dicts with keys ``"image"``, ``"label"``, ``"sample_id"``.
        device: Device the images are moved to.
        normalize: L2-normalise each feature vector.
        max_items: Stop after this many samples (the last batch is cut); ``None`` for all.
        progress: Show a rich progress bar.

    Returns:
        ``(feats [N, F] float32, labels [N] long, indices [N] long)``, all on the CPU, in
        the order the loader yields them. The train/eval mode of every submodule of
        ``backbone`` is restored on return.

    Raises:
        ValueError: If ``max_items`` is not positive.
    """
    if max_items is not None and max_items <= 0:
        raise ValueError(f"max_items={max_items} must be a positive number of samples or None.")
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    indices: list[Tensor] = []
    seen = 0
    with eval_mode(backbone), torch.no_grad(), progress_bar(disable=not progress) as bar:
        task = bar.add_task("features", total=_num_batches(loader), info="")
        for batch in loader:
            images, batch_labels = batch_tensors(batch, device)
            take = images.shape[0] if max_items is None else min(images.shape[0], max_items - seen)
            out = embed(backbone, images[:take])
            if normalize:
                out = F.normalize(out, dim=1)
            feats.append(out.cpu())
            labels.append(batch_labels[:take].cpu())
            indices.append(torch.as_tensor(batch["sample_id"]).long()[:take].cpu())
            seen += take
            bar.advance(task)
            if max_items is not None and seen >= max_items:
                break
    if not feats:
        empty = torch.empty(0, dtype=torch.long)
        return torch.empty(0, 0), empty, empty.clone()
    return torch.cat(feats), torch.cat(labels), torch.cat(indices)
