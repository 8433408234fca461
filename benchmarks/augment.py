"""Throughput of the batched view augmentation (GpuViews) on CIFAR-sized images.

Measures images/s for two 32 px views (default ``ViewConfig``) from random 32x32 ``uint8``
images after warm-up, drawing from the global generator as in training, eager and compiled
(``GpuViews(compile=True)``, what ``trainer.compile=true`` uses), and the number of
top-level torch ops one batch dispatches (on a GPU each is about one kernel launch, so the
eager pipeline is launch-bound there). On CPU it also times the per-sample torchvision v2
pipeline with the same settings for comparison (one process, no loader workers). Writes a
JSON file.

    python benchmarks/augment.py --device auto --batch 512
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torchvision.transforms import v2

from nbr_contrast.data.config import DataConfig, ViewConfig
from nbr_contrast.data.gpu_ops import blur_kernel_size
from nbr_contrast.data.gpu_views import GpuViews


def torchvision_view(view: ViewConfig, mean: list[float], std: list[float]) -> v2.Compose:
    """The per-sample v2 pipeline for a random-resized-crop view (blur/solarise when enabled)."""
    ops: list[torch.nn.Module] = [
        v2.RandomResizedCrop(view.size, scale=tuple(view.crop_scale), ratio=tuple(view.crop_ratio)),
        v2.RandomHorizontalFlip(view.flip_p),
        v2.RandomApply(
            [v2.ColorJitter(view.brightness, view.contrast, view.saturation, view.hue)],
            p=view.jitter_p,
        ),
        v2.RandomGrayscale(view.grayscale_p),
    ]
    if view.blur_p > 0:
        blur = v2.GaussianBlur(blur_kernel_size(view.size), sigma=tuple(view.blur_sigma))
        ops.append(v2.RandomApply([blur], p=view.blur_p))
    if view.solarize_p > 0:
        ops.append(v2.RandomSolarize(int(view.solarize_threshold * 255), p=view.solarize_p))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


def images_per_second(
    step: Callable[[], object], n_images: int, sync: Callable[[], None], min_time: float
) -> tuple[float, int]:
    """Run ``step`` until ``min_time`` seconds have passed; return images/s and the step count."""
    sync()
    steps, start = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return steps * n_images / elapsed, steps


def dispatched_ops(step: Callable[[], object]) -> int:
    """Top-level torch ops (no enclosing op) that one call of ``step`` dispatches."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for event in prof.events() if event.cpu_parent is None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None, help="augment_<device>.json by default")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    out = args.out or Path("benchmarks/results") / f"augment_{device}.json"
    torch.manual_seed(args.seed)

    data = DataConfig()
    views = [ViewConfig(size=32), ViewConfig(size=32)]
    images = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, device=device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    measured: dict[str, dict[str, float]] = {}
    for name, compiled in (("gpu_views", False), ("gpu_views_compiled", True)):
        augment = GpuViews(views, data.mean, data.std, compile=compiled).to(device)
        start = time.perf_counter()
        augment(images)
        sync()
        first_call = time.perf_counter() - start
        for _ in range(args.warmup):
            augment(images)
        ops = dispatched_ops(lambda augment=augment: augment(images))
        rate, steps = images_per_second(
            lambda augment=augment: augment(images), args.batch, sync, args.min_time
        )
        measured[name] = {
            "images_per_s": rate,
            "steps": steps,
            "ops_per_batch": ops,
            "first_call_s": first_call,
        }
    result: dict[str, object] = {
        "device": device,
        "device_name": (
            torch.cuda.get_device_name()
            if device == "cuda"
            else platform.processor() or platform.machine()
        ),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "views": len(views),
        "image_size": 32,
        "view_size": 32,
        **measured,
    }

    if device == "cpu":
        pipelines = [torchvision_view(v, data.mean, data.std) for v in views]
        cpu_images = images.cpu()

        def per_sample_step() -> None:
            for image in cpu_images:
                for pipeline in pipelines:
                    pipeline(image)

        per_sample_step()
        rate, steps = images_per_second(per_sample_step, args.batch, sync, args.min_time)
        result["torchvision_v2_per_sample"] = {"images_per_s": rate, "steps": steps}

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
