"""Latency of exact cosine top-k search over a neighbour bank, for every available backend.

A batch of 512 random unit queries (d = 256) against random unit banks of 65,536 and
1,281,167 entries (ImageNet's training set), k in {1, 5, 30, 512} (NNCLR, SNCLR-CIFAR,
SNCLR, CoNe). Backends: torch fp32, torch fp16 (bf16 on the CPU), FAISS on the CPU and,
where faiss-gpu works, FAISS on the GPU. Reports the median milliseconds of ``--repeats``
timed calls after ``--warmup`` untimed ones (CUDA synchronised) and writes a JSON file.

    python benchmarks/search.py --device auto
    python benchmarks/search.py --quick          # banks of 65,536 and 262,144
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.nn.functional import normalize

from nbr_contrast.neighbours.search import (
    FaissSearch,
    SearchBackend,
    TorchSearch,
    faiss_available,
    faiss_gpu_available,
)

BATCH, DIM, KS = 512, 256, (1, 5, 30, 512)
BANKS = (65_536, 1_281_167)
QUICK_BANKS = (65_536, 262_144)
LARGE = 1_000_000


def random_unit(n: int, device: torch.device, seed: int) -> torch.Tensor:
    """``[n, DIM]`` random unit vectors, generated in chunks on ``device``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(n, DIM, device=device)
    for start in range(0, n, 262_144):
        rows = out[start : start + 262_144]
        rows.copy_(normalize(torch.randn(rows.shape, generator=gen, device=device), dim=1))
    return out


def backends(device: torch.device) -> list[tuple[str, str, SearchBackend, torch.device]]:
    """(name, precision, backend, device the keys live on) for every available backend."""
    half = "fp16" if device.type == "cuda" else "bf16"
    found: list[tuple[str, str, SearchBackend, torch.device]] = [
        ("torch", "fp32", TorchSearch(chunk_size=262_144, half=False), device),
        ("torch", half, TorchSearch(chunk_size=262_144, half=True), device),
    ]
    if faiss_available():
        found.append(("faiss-cpu", "fp32", FaissSearch(), torch.device("cpu")))
        if device.type == "cuda" and faiss_gpu_available():
            found.append(("faiss-gpu", "fp32", FaissSearch(), device))
    return found


def time_ms(
    backend: SearchBackend, queries: torch.Tensor, keys: torch.Tensor, k: int, warmup: int, n: int
) -> float:
    """Median wall time of ``backend.topk`` in milliseconds."""

    def sync() -> None:
        if keys.is_cuda:
            torch.cuda.synchronize(keys.device)

    for _ in range(warmup):
        backend.topk(queries, keys, k)
    times = []
    for _ in range(n):
        sync()
        start = time.perf_counter()
        backend.topk(queries, keys, k)
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def machine(device: torch.device) -> dict[str, object]:
    """Versions, device name and thread counts."""
    info: dict[str, object] = {
        "device": device.type,
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if faiss_available():
        import faiss

        info["faiss"] = faiss.__version__
        info["faiss_threads"] = faiss.omp_get_max_threads()
        info["faiss_gpus"] = faiss.get_num_gpus()
    return info


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (the platform's machine name elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    """Parse arguments, run every (backend, bank, k) and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", type=Path, default=None, help="results/search_<device>.json")
    parser.add_argument("--quick", action="store_true", help="banks of 65,536 and 262,144")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--large-repeats", type=int, default=2, help="repeats for banks above 1M entries"
    )
    parser.add_argument(
        "--large-warmup",
        type=int,
        default=0,
        help="warm-up calls for banks above 1M entries (the smaller bank warms every backend)",
    )
    args = parser.parse_args()
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    out = args.out or Path(__file__).parent / "results" / f"search_{device.type}.json"

    queries = random_unit(BATCH, device, seed=0)
    records = []
    for bank in QUICK_BANKS if args.quick else BANKS:
        keys_on = {device: random_unit(bank, device, seed=1)}
        repeats = args.large_repeats if bank > LARGE else args.repeats
        warmup = args.large_warmup if bank > LARGE else args.warmup
        for backend_name, precision, backend, keys_device in backends(device):
            if keys_device not in keys_on:
                keys_on[keys_device] = keys_on[device].to(keys_device)
            keys = keys_on[keys_device]
            for k in KS:
                ms = time_ms(backend, queries.to(keys_device), keys, k, warmup, repeats)
                record = {
                    "backend": backend_name,
                    "precision": precision,
                    "bank": bank,
                    "k": k,
                    "ms": round(ms, 3),
                    "repeats": repeats,
                    "warmup": warmup,
                }
                records.append(record)
                print(json.dumps(record), flush=True)
        del keys_on

    result = {
        "machine": machine(device),
        "settings": {"batch": BATCH, "dim": DIM, "ks": list(KS), "quick": args.quick},
        "records": records,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    rows = sorted({(r["backend"], r["precision"], r["bank"]) for r in records})
    ms = {(r["backend"], r["precision"], r["bank"], r["k"]): r["ms"] for r in records}
    print(
        f"\n{'backend':<10} {'prec':<5} {'bank':>9} " + " ".join(f"{'k=' + str(k):>9}" for k in KS)
    )
    for row in rows:
        cells = " ".join(f"{ms[(*row, k)]:>9.1f}" for k in KS)
        print(f"{row[0]:<10} {row[1]:<5} {row[2]:>9,} {cells}")
    print(f"median ms per search of {BATCH} queries (d={DIM}); written to {out}")


if __name__ == "__main__":
    main()
