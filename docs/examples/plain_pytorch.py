"""NNCLR in a plain PyTorch loop, on the CIFAR-10 subset shipped with the package.

No Lightning, no Hydra: ``python docs/examples/plain_pytorch.py --steps 100``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from nbr_contrast.models.backbone_config import BackboneConfig
from nbr_contrast.data.gpu_views import GpuViews
from nbr_contrast.data.sources import mini_source
from nbr_contrast.data.config import DataConfig, ViewConfig
from nbr_contrast.losses import nnclr_loss
from nbr_contrast.models.backbones import build_backbone
from nbr_contrast.models.heads import MLPHead
from nbr_contrast.neighbours.bank import NeighbourBank, PayloadSpec
from nbr_contrast.utils.lars import LARS


def main(argv: list[str] | None = None) -> tuple[nn.Module, NeighbourBank, list[float]]:
    """Train for ``--steps`` steps; return the model, the bank and the losses."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--queue-size", type=int, default=4096)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # 5,000 images as one uint8 tensor [N, 3, 32, 32]; BYOL's two views, made batch-wise.
    data = mini_source("train")
    images = torch.from_numpy(data.as_uint8()).permute(0, 3, 1, 2)
    labels = torch.from_numpy(data.labels)
    stats, size = DataConfig(), args.image_size  # the subset's channel mean and std
    views = GpuViews([ViewConfig(size), ViewConfig(size, solarize_p=0.2)], stats.mean, stats.std)

    # ResNet-18 with the small-image stem, NNCLR's projector (BN last) and predictor.
    backbone = build_backbone(BackboneConfig(name="resnet18"), image_size=size)
    projector = MLPHead(backbone.out_dim, [2048, 2048], 256, last_bn=True)
    predictor = MLPHead(256, [4096], 256)
    model = nn.ModuleDict({"backbone": backbone, "projector": projector, "predictor": predictor})
    model.to(device).train()
    # solo-learn's LARS, lr 0.4 x B/256; biases and norm weights are neither decayed nor adapted.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay}, {"params": no_decay, "lars_exclude": True}]
    optimizer = LARS(groups, 0.4 * args.batch_size / 256, weight_decay=1e-5, clip_lr=True)
    # The support set: past normalised projections, each stored with its image's label.
    bank = NeighbourBank("support", args.queue_size, 256, {"label": PayloadSpec()}, device=device)

    losses = []
    for step in range(args.steps):
        batch = torch.randperm(len(images))[: args.batch_size]
        y = labels[batch].to(device)
        x1, x2 = views(images[batch].to(device))
        z1, z2 = projector(backbone(x1)), projector(backbone(x2))
        z1n, z2n = F.normalize(z1.detach(), dim=1), F.normalize(z2.detach(), dim=1)
        nn1, nn2 = bank.search(z1n, k=1), bank.search(z2n, k=1)
        # Each view's nearest bank entry is the positive of the other view's prediction.
        loss_12 = nnclr_loss(nn1.embeddings[:, 0], predictor(z2), temperature=0.2)
        loss = 0.5 * (loss_12 + nnclr_loss(nn2.embeddings[:, 0], predictor(z1), temperature=0.2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bank.enqueue(z1n, label=y)  # after the step, so a batch never finds itself
        nn_acc = (nn1.payloads["label"][:, 0] == y).float().mean()
        losses.append(loss.item())
        print(f"step {step + 1}/{args.steps}  loss {losses[-1]:.4f}  nn_acc {nn_acc:.3f}")
    return model, bank, losses


if __name__ == "__main__":
    main()
