"""What importing the plugin path adds to ``import lightning``, in fresh interpreters.

Runs the two commands in turn, A B A B ... (so a drifting machine affects both alike):

* A: ``import lightning``
* B: ``import lightning`` and ``from nbr_contrast import <every method and baseline>,
  NeighbourIndexCallback, ViewsDataModule, views`` (touching each name, so every lazy
  import happens)

and writes each one's wall times, their medians, the median of the pairwise differences
B - A, and whether B imported Hydra (it must not) to ``benchmarks/results/import_time.json``.

Usage::

    python benchmarks/import_time.py --runs 10
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

NAMES = (
    "NNCLR, CO2, MoCoV2, SNCLR, MoCoV3, CLIM, CoNe, Supervised, MSF, BYOL, "
    "NeighbourIndexCallback, ViewsDataModule, views"
)
BASE = "import lightning"
PLUGIN = (
    f"import lightning, sys; from nbr_contrast import {NAMES}; "
    "print(any(m.split('.')[0] == 'hydra' for m in sys.modules))"
)
OUT = Path(__file__).resolve().parent / "results" / "import_time.json"


def wall(code: str) -> tuple[float, str]:
    """Seconds a fresh interpreter takes to run ``code``, and what it printed."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return seconds, proc.stdout.strip()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    wall(BASE), wall(PLUGIN)  # warm the file cache
    base, plugin, hydra = [], [], []
    for i in range(args.runs):
        base.append(wall(BASE)[0])
        seconds, printed = wall(PLUGIN)
        plugin.append(seconds)
        hydra.append(printed == "True")
        print(f"run {i + 1}/{args.runs}: lightning {base[-1]:.2f} s, plugin {seconds:.2f} s")
    extra = [b - a for a, b in zip(base, plugin, strict=True)]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "runs": args.runs,
        "import_lightning_s": {
            "median": statistics.median(base),
            "min": min(base),
            "max": max(base),
        },
        "with_plugin_s": {
            "median": statistics.median(plugin),
            "min": min(plugin),
            "max": max(plugin),
        },
        "added_s": {"median": statistics.median(extra), "min": min(extra), "max": max(extra)},
        "hydra_imported": any(hydra),
        "names": NAMES,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["added_s"]), "hydra imported:", result["hydra_imported"])
    return result


if __name__ == "__main__":
    main()
