"""How spread out a randomly initialised method's embeddings are: mean pairwise cosine.

An InfoNCE loss over a queue can only separate a sample's key from the others as far as
the embeddings differ; at random init a head without BatchNorm maps every image close to
one direction. For each configuration this embeds the first ``--images`` un-augmented test
images of the built-in subset with a fresh model (train mode, as in a training step) and
reports the mean cosine similarity between different images of the backbone features, the
online projections and the momentum keys. Writes ``benchmarks/results/embedding_spread.json``.

    python benchmarks/embedding_spread.py
    python benchmarks/embedding_spread.py --image-size 32 method=co2 method.proj_hidden_bn=true
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from nbr_contrast import api
from nbr_contrast.app.build import build_datamodule, build_method

REPO = Path(__file__).resolve().parents[1]
# MoCo v2 as the smoke preset composes it (16 px, heads of 512 -> 128), without and with
# BatchNorm in the head, and the LARS recipes' heads for comparison
CONFIGS: dict[str, list[str]] = {
    "mocov2": ["method=mocov2"],
    "byol": ["method=byol"],
    "mocov2_hidden_bn": ["method=mocov2", "method.proj_hidden_bn=true"],
    "mocov3": ["method=mocov3", "method.pred_hidden_dim=512"],
    "nnclr": ["method=nnclr", "method.pred_hidden_dim=512"],
}
SMALL_HEADS = ["method.proj_hidden_dim=512", "method.proj_output_dim=128"]


def mean_off_diagonal_cosine(x: Tensor) -> float:
    """Mean cosine similarity over all pairs of different rows of ``x``."""
    x = F.normalize(x.float(), dim=1)
    sims = x @ x.T
    n = x.shape[0]
    return float((sims.sum() - sims.diagonal().sum()) / (n * n - n))


def spread(overrides: list[str], images: int, seed: int, out_dir: Path) -> dict[str, float]:
    """Mean pairwise cosines of features, projections and (if any) momentum keys."""
    cfg = api.compose([*overrides, "data.num_workers=0", f"seed={seed}"], output_dir=out_dir)
    torch.manual_seed(seed)
    method = build_method(cfg).train()
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    assert datamodule.test_source is not None
    x = next(iter(datamodule.eval_loader(datamodule.test_source)))["image"][:images]
    with torch.no_grad():
        feats = method.features(x)
        result = {
            "features": mean_off_diagonal_cosine(feats),
            "projections": mean_off_diagonal_cosine(method.projector(feats)),
        }
        if getattr(method, "momentum_backbone", None) is not None:
            result["keys"] = mean_off_diagonal_cosine(method.keys(x))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "embedding_spread.json"
    )
    args, extra = parser.parse_known_args()
    common = ["data=cifar10_mini", f"data.image_size={args.image_size}", *SMALL_HEADS]
    configs = {"custom": extra} if extra else CONFIGS
    with tempfile.TemporaryDirectory() as tmp:
        rows = {
            name: spread([*common, *overrides], args.images, args.seed, Path(tmp) / name)
            for name, overrides in configs.items()
        }
    result = {
        "image_size": args.image_size,
        "images": args.images,
        "seed": args.seed,
        "overrides": {name: [*common, *o] for name, o in configs.items()},
        "mean_pairwise_cosine": rows,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
