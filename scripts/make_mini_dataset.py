"""Cut the class-balanced CIFAR-10 subset that ships with the package.

Reads the full JPEG copy of CIFAR-10 (``cifar10-jpeg-{train,test}.npz``, see
``/work/shared/data/README.md``) and writes ``cifar10_mini_{train,test}.npz`` into
``src/nbr_contrast/data/assets`` in the same format, keeping each image's original JPEG bytes.

Usage::

    python scripts/make_mini_dataset.py [--src ../shared/data] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "nbr_contrast" / "data" / "assets"
PER_CLASS = {"train": 500, "test": 100}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="folder holding cifar10-jpeg-{train,test}.npz (default: ../shared/data)",
    )
    parser.add_argument("--out", type=Path, default=ASSETS, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset choice")
    return parser.parse_args()


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` images drawn without replacement from every class."""
    picks = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} images, fewer than {per_class}")
        picks.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(picks))


def cut(src: Path, dst: Path, per_class: int, rng: np.random.Generator) -> None:
    """Write the subset of ``src`` to ``dst`` and print its size and sha256."""
    with np.load(src) as archive:
        jpeg, offsets = archive["jpeg"], archive["offsets"]
        labels, classes = archive["labels"], archive["classes"]
    keep = balanced_subset(labels, per_class, rng)
    blobs = [jpeg[offsets[i] : offsets[i + 1]] for i in keep]
    new_offsets = np.zeros(len(keep) + 1, dtype=np.int64)
    new_offsets[1:] = np.cumsum([len(b) for b in blobs])
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("wb") as f:
        np.savez(
            f,
            jpeg=np.concatenate(blobs).astype(np.uint8),
            offsets=new_offsets,
            labels=labels[keep].astype(np.uint8),
            classes=classes,
        )
    digest = hashlib.sha256(dst.read_bytes()).hexdigest()
    size_mb = dst.stat().st_size / 1e6
    print(f"{dst.name}: {len(keep)} images, {size_mb:.2f} MB, sha256 {digest}")


def main() -> None:
    args = parse_args()
    rng = np.random.default_rng(args.seed)
    for split, per_class in PER_CLASS.items():
        src = args.src / f"cifar10-jpeg-{split}.npz"
        if not src.is_file():
            raise SystemExit(f"{src} not found; pass --src pointing at the CIFAR-10 JPEG files")
        cut(src, args.out / f"cifar10_mini_{split}.npz", per_class, rng)


if __name__ == "__main__":
    main()
