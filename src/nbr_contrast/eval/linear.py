"""Offline linear evaluation of a frozen backbone.

Standard protocol: a single linear layer on top of the frozen features, trained with SGD
(momentum 0.9) and a cosine learning-rate schedule over the epochs; the backbone stays in
eval mode (batch-norm statistics frozen) and receives no gradients.

Two modes share one training loop:

* :func:`linear_eval` (default): every epoch the training images (typically randomly
  cropped and flipped by the caller's loader) go through the frozen backbone again, so the
  classifier sees fresh augmentations.
* :func:`linear_eval_on_features` (and ``linear_eval(..., precompute=True)``): features are
  computed once and the classifier trains on those tensors. Much cheaper, but without
  augmentation, so accuracies are usually slightly lower than the augmented protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nbr_contrast.eval.features import (
    batch_tensors,
    embed,
    eval_mode,
    extract_features,
    progress_bar,
)

Batches = Iterable[tuple[Tensor, Tensor]]
MOMENTUM = 0.9
TEST_BATCH = 1024


@dataclass(frozen=True)
class _Settings:
    """How one classifier is trained (the arguments of :func:`linear_eval`)."""

    num_classes: int
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    seed: int
    device: torch.device | str
    progress: bool


def _feature_batches(
    feats: Tensor, labels: Tensor, batch_size: int, generator: torch.Generator | None
) -> Batches:
    """Mini-batches of precomputed features, shuffled with ``generator`` when one is given."""
    order = (
        torch.randperm(feats.shape[0], generator=generator)
        if generator is not None
        else torch.arange(feats.shape[0])
    )
    for start in range(0, feats.shape[0], batch_size):
        idx = order[start : start + batch_size]
        yield feats[idx], labels[idx]


def _backbone_batches(
    backbone: nn.Module, loader: Iterable[Mapping[str, Any]], device: torch.device | str
) -> Batches:
    """Features of each loader batch through the frozen backbone (no gradients)."""
    with eval_mode(backbone):
        for batch in loader:
            images, labels = batch_tensors(batch, device)
            with torch.no_grad():
                feats = embed(backbone, images)
            yield feats, labels


def _evaluate(classifier: nn.Linear, batches: Batches) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent (top-``min(5, C)`` for fewer classes)."""
    hits1 = hits5 = total = 0
    top = min(5, classifier.out_features)
    with torch.no_grad():
        for feats, labels in batches:
            pred = classifier(feats).topk(top, dim=1).indices
            match = pred == labels[:, None]
            hits1 += int(match[:, 0].sum())
            hits5 += int(match.any(dim=1).sum())
            total += labels.shape[0]
    if total == 0:
        raise ValueError("The test set is empty; linear evaluation needs test samples.")
    return 100.0 * hits1 / total, 100.0 * hits5 / total


def _train(
    settings: _Settings,
    in_dim: int,
    train_batches: Callable[[int], Batches],
    test_x: Tensor,
    test_y: Tensor,
) -> dict[str, Any]:
    """The training loop shared by both modes.

    Args:
        settings: Classes, epochs, learning rate (cosine-annealed to zero over the epochs),
            SGD's weight decay, the seed of the classifier initialisation, its device and
            whether to show a rich progress bar over the epochs.
        in_dim: Feature size.
        train_batches: Called with the epoch index; yields ``(feats, labels)`` on the device.
        test_x: Test features ``[M, F]`` on the device.
        test_y: Test labels ``[M]`` on the device.

    Returns:
        ``{"top1", "top5", "epochs", "history"}`` with the final test accuracies.
    """
    num_classes, epochs, lr = settings.num_classes, settings.epochs, settings.lr
    weight_decay, seed, device = settings.weight_decay, settings.seed, settings.device
    test_batch = max(settings.batch_size, TEST_BATCH)
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be at least 1.")
    generator = torch.Generator().manual_seed(seed)
    classifier = nn.Linear(in_dim, num_classes)
    with torch.no_grad():
        classifier.weight.normal_(0.0, 0.01, generator=generator)
        classifier.bias.zero_()
    classifier.to(device)
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    history: list[dict[str, float]] = []
    top1 = top5 = 0.0
    with progress_bar(disable=not settings.progress) as bar:
        task = bar.add_task("linear eval", total=epochs, info="")
        for epoch in range(epochs):
            classifier.train()
            loss_sum, seen = torch.zeros((), device=device), 0
            for feats, labels in train_batches(epoch):
                loss = F.cross_entropy(classifier(feats), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * labels.shape[0]
                seen += labels.shape[0]
            if seen == 0:
                raise ValueError("The training set is empty; linear evaluation needs samples.")
            scheduler.step()
            classifier.eval()
            top1, top5 = _evaluate(classifier, _feature_batches(test_x, test_y, test_batch, None))
            train_loss = float(loss_sum) / seen
            history.append({"epoch": epoch, "train_loss": train_loss, "test_top1": top1})
            bar.update(task, advance=1, info=f"loss {train_loss:.3f} · top-1 {top1:.2f}%")
    return {"top1": top1, "top5": top5, "epochs": epochs, "history": history}


def linear_eval_on_features(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train a linear classifier on precomputed (non-augmented) features.

    This is the cheap variant of the protocol: the backbone runs once, and the classifier
    never sees augmented views.

    Args:
        train_feats: Training features ``[N, F]``.
        train_labels: Integer labels ``[N]``.
        test_feats: Test features ``[M, F]``.
        test_labels: Integer labels ``[M]``.
        num_classes: Number of classes.
        epochs: Training epochs.
        lr: Initial learning rate (cosine schedule to zero).
        batch_size: Mini-batch size (training samples are reshuffled every epoch).
        weight_decay: L2 penalty.
        seed: Seed of the initialisation and the shuffling.
        device: Device to train on.
        progress: Show a rich progress bar over the epochs.

    Returns:
        ``{"top1", "top5", "epochs", "history"}``: final test accuracies in percent and,
        per epoch, ``{"epoch", "train_loss", "test_top1"}``.

    Raises:
        ValueError: If ``batch_size`` or ``epochs`` is not positive or a split is empty.
    """
    settings = _Settings(num_classes, epochs, lr, batch_size, weight_decay, seed, device, progress)
    return _train_on_features(settings, train_feats, train_labels, test_feats, test_labels)


def _train_on_features(
    settings: _Settings, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor
) -> dict[str, Any]:
    """:func:`linear_eval_on_features` with its settings gathered."""
    if settings.batch_size < 1:
        raise ValueError(f"batch_size={settings.batch_size} must be at least 1.")
    device = settings.device
    train_x, train_y = train_x.float().to(device), train_y.long().to(device)
    test_x, test_y = test_x.float().to(device), test_y.long().to(device)
    shuffle = torch.Generator().manual_seed(settings.seed + 1)

    def train_batches(_epoch: int) -> Batches:
        return _feature_batches(train_x, train_y, settings.batch_size, shuffle)

    return _train(settings, train_x.shape[1], train_batches, test_x, test_y)


def linear_eval(
    backbone: nn.Module,
    train_loader: Iterable[Mapping[str, Any]],
    test_loader: Iterable[Mapping[str, Any]],
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    device: torch.device | str = "cpu",
    augment_loader_factory: Callable[[int], Iterable[Mapping[str, Any]]] | None = None,
    seed: int = 0,
    progress: bool = True,
    precompute: bool = False,
) -> dict[str, Any]:
    """Linear evaluation of a frozen backbone.

    By default the training images are passed through the frozen backbone again every
    epoch, so a ``train_loader`` with random crops and flips gives the augmented standard
    protocol (its batch size is the one used; ``batch_size`` only applies with
    ``precompute=True``). Test features are computed once.

    Args:
        backbone: Feature extractor, already on ``device``; kept in eval mode, never updated.
            The train/eval mode of its submodules is restored on return.
        train_loader: Batch dicts (``"image"``, ``"label"``, ``"index"``) of training images.
        test_loader: Batch dicts of (un-augmented) test images.
        num_classes: Number of classes.
        epochs: Training epochs.
        lr: Initial learning rate (cosine schedule to zero).
        batch_size: Mini-batch size for the precomputed-feature mode.
        weight_decay: L2 penalty.
        device: Device of the backbone and the classifier.
        augment_loader_factory: Optional callable returning the training loader for a given
            epoch index (e.g. to reseed augmentations per epoch); it replaces
            ``train_loader`` during training. Not allowed with ``precompute=True``.
        seed: Seed of the classifier initialisation (and shuffling with ``precompute``).
        progress: Show rich progress bars.
        precompute: Embed ``train_loader`` once and train on those fixed features with
            :func:`linear_eval_on_features` (cheaper, non-augmented).

    Returns:
        ``{"top1", "top5", "epochs", "history", "mode"}``: final test accuracies in
        percent, per-epoch ``{"epoch", "train_loss", "test_top1"}`` and
        ``"recomputed"`` (features recomputed every epoch) or ``"precomputed"``.

    Raises:
        ValueError: If ``precompute`` is combined with ``augment_loader_factory``.
    """
    if precompute and augment_loader_factory is not None:
        raise ValueError(
            "precompute=True trains on fixed features; drop augment_loader_factory or set "
            "precompute=False."
        )
    settings = _Settings(num_classes, epochs, lr, batch_size, weight_decay, seed, device, progress)
    test_x, test_y, _ = extract_features(backbone, test_loader, device, progress=progress)
    if precompute:
        train_x, train_y, _ = extract_features(backbone, train_loader, device, progress=progress)
        result = _train_on_features(settings, train_x, train_y, test_x, test_y)
        return {**result, "mode": "precomputed"}

    def train_batches(epoch: int) -> Batches:
        loader = train_loader if augment_loader_factory is None else augment_loader_factory(epoch)
        return _backbone_batches(backbone, loader, device)

    test_x, test_y = test_x.to(device), test_y.to(device)
    result = _train(settings, test_x.shape[1], train_batches, test_x, test_y)
    return {**result, "mode": "recomputed"}
