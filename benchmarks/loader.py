"""Host time per training batch of the data loader alone (no views, no model).

Iterates ``ViewsDataModule.train_dataloader()`` for ``data.pipeline=gpu`` with an in-memory
source (the resident path: labels and indices only, images gathered on the device later)
in the main process and reports the median milliseconds per batch after warm-up. Writes a
JSON file.

    python benchmarks/loader.py --batch-size 512 --out benchmarks/results/loader_cpu.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
from search import cpu_name
from shared_data import default_data, npz_paths

from nbr_contrast import api
from nbr_contrast.app.build import build_datamodule


def batch_ms(data: str, batch_size: int, batches: int, warmup: int) -> dict[str, float]:
    """Median and mean host milliseconds per batch of the resident training loader."""
    overrides = [f"data={data}", "data.pipeline=gpu", f"data.batch_size={batch_size}"]
    overrides += ["data.num_workers=0", "plots=false"]
    if data == "npz":
        overrides += npz_paths()
    cfg = api.compose(overrides, output_dir=Path("/tmp/loader-bench"))
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    times = []
    epoch = 0
    while len(times) < warmup + batches:
        loader = datamodule.train_dataloader()
        loader.sampler.set_epoch(epoch)
        it = iter(loader)
        for _ in itertools.count():
            start = time.perf_counter()
            try:
                next(it)
            except StopIteration:
                break
            times.append((time.perf_counter() - start) * 1000.0)
            if len(times) >= warmup + batches:
                break
        epoch += 1
    timed = times[warmup:]
    return {"median_ms": statistics.median(timed), "mean_ms": statistics.mean(timed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loader_cpu.json"))
    args = parser.parse_args()
    result = {
        "device_name": cpu_name(),
        "torch": torch.__version__,
        "data": args.data,
        "batch_size": args.batch_size,
        "unit": "host ms per training batch of the resident (data.pipeline=gpu) loader",
        **batch_ms(args.data, args.batch_size, args.batches, args.warmup),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
