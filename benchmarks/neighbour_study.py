"""What the neighbour diagnostics show at the CPU smoke scale (built-in data, 16 px).

Two studies, each a handful of CLI runs in fresh processes, summarised from their
``csv/metrics.csv`` into ``benchmarks/results/neighbour_study_<study>.json``::

    python benchmarks/neighbour_study.py self_retrieval   # NNCLR: bank size x exclude_self
    python benchmarks/neighbour_study.py collapse         # CO2: consistency temperature

``self_retrieval`` trains NNCLR at the quickstart's scale (4,992 training samples per
epoch) for ``--epochs`` epochs with a support set under (4,096) and over (8,192) one
epoch's entries, each with ``exclude_self`` off (the paper's) and on, and reports the share
of retrieved neighbours that are the query's own earlier entry, per epoch, and the final
kNN accuracy. ``collapse`` trains CO2 at the smoke preset's scale (``reproduce.py``) with
the consistency temperature at the paper's 0.05 and at 0.1, logging every step, and reports
the spread indicator, the step of the collapse warning and the step where ``train/l_con``
fell below a tenth of its first value.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from reproduce import REPO, git_commit, hardware

OUT = REPO / "outputs" / "neighbour_study"
RESULTS = REPO / "benchmarks" / "results"
SMOKE = [  # the smoke preset's CO2 (reproduce.py SMOKE_OVERRIDES), 16 px on the built-in data
    "method=co2",
    "data=cifar10_mini",
    "data.image_size=16",
    "data.batch_size=128",
    "trainer=cpu",
    "trainer.precision=auto",
    "trainer.channels_last=true",
    "optim.warmup_epochs=1",
    "method.proj_hidden_dim=512",
    "method.proj_output_dim=128",
    "method.queue_size=512",
    "method.momentum=0.99",
    "method.final_momentum=0.99",
]
WARNING = re.compile(r"step (\d+): the embeddings have collapsed")


def launch(name: str, overrides: list[str], launch_new: bool = True) -> tuple[Path, str, float]:
    """Train one run in a fresh process; return its folder, its output and its wall time.

    A run whose folder already holds its ``summary.json`` is reused (its output, where
    kept, from ``output.txt``). With ``launch_new=False`` nothing is trained: a run without
    a summary is reported from what its folder holds (a run stopped part-way).
    """
    run_dir = OUT / name
    output = run_dir / "output.txt"
    if not launch_new and not (run_dir / "summary.json").is_file():
        print(f"[neighbour_study] {name}: not finished, summarised as it stands", flush=True)
        return run_dir, output.read_text() if output.is_file() else "", math.nan
    if (run_dir / "summary.json").is_file():
        print(f"[neighbour_study] {name}: reused from {run_dir}", flush=True)
        summary = json.loads((run_dir / "summary.json").read_text())
        wall = summary.get("wall_seconds", summary.get("train_seconds", math.nan))
        return run_dir, output.read_text() if output.is_file() else "", float(wall)
    cmd = [sys.executable, "-m", "nbr_contrast", *overrides, f"hydra.run.dir={run_dir}"]
    print(f"[neighbour_study] {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    output.write_text(done.stdout + done.stderr)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "wall_seconds": wall}, indent=2))
    return run_dir, done.stdout + done.stderr, wall


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's ``csv/metrics.csv``."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def series(rows: list[dict[str, str]], key: str, by: str) -> list[tuple[int, float]]:
    """``(epoch or step, value)`` of every row that logged ``key``."""
    return [(int(r[by]), float(r[key])) for r in rows if r.get(key)]


def self_retrieval(epochs: int, launch_new: bool = True) -> dict[str, Any]:
    """NNCLR at the quickstart's scale: support set 4,096 / 8,192 x exclude_self off / on."""
    runs = []
    for queue in (4096, 8192):
        for exclude in (False, True):
            name = f"nnclr_q{queue}_{'exclude' if exclude else 'keep'}"
            overrides = [
                "experiment=quickstart",
                f"trainer.max_epochs={epochs}",
                f"method.queue_size={queue}",
                f"method.exclude_self={str(exclude).lower()}",
                "trainer.enable_progress_bar=false",
                "plots=false",
            ]
            run_dir, _, wall = launch(name, overrides, launch_new)
            rows = metric_rows(run_dir)
            done = run_dir / "summary.json"
            summary = json.loads(done.read_text()) if done.is_file() else {}
            runs.append(
                {
                    "name": name,
                    "queue_size": queue,
                    "exclude_self": exclude,
                    "finished": bool(summary),
                    "last_epoch": max((int(r["epoch"]) for r in rows if r["epoch"]), default=None),
                    "overrides": overrides,
                    "self_retrieval_by_epoch": dict(
                        series(rows, "train/nbr/self_retrieval_epoch", "epoch")
                    ),
                    "agreement_by_epoch": dict(series(rows, "train/nbr/agreement_epoch", "epoch")),
                    "age_mean_by_epoch": dict(series(rows, "train/nbr/age_mean_epoch", "epoch")),
                    "knn_acc_before": summary.get("knn_acc_before@200"),
                    "knn_acc_after": summary.get("knn_acc_after@200"),
                    "probe_acc1": summary.get("linear_probe_acc1"),
                    "wall_s": round(wall, 1),
                }
            )
    return {"epochs": epochs, "samples_per_epoch": 4992, "runs": runs}


def collapse(epochs: int, launch_new: bool = True) -> dict[str, Any]:
    """CO2 at the smoke scale with τ_con 0.05 (the paper's) and 0.1, logged every step."""
    runs = []
    for tau in (0.05, 0.1):
        overrides = [
            *SMOKE,
            f"method.consistency_temperature={tau}",
            f"trainer.max_epochs={epochs}",
            "trainer.log_every_n_steps=1",
            "trainer.enable_progress_bar=false",
            "knn_report=false",
            "plots=false",
        ]
        run_dir, output, wall = launch(f"co2_tau{tau}", overrides, launch_new)
        rows = metric_rows(run_dir)
        l_con = series(rows, "train/l_con_step", "step")
        spread = series(rows, "train/nbr/spread_step", "step")
        first = l_con[0][1] if l_con else math.nan
        fell = next((s for s, v in l_con if v < 0.1 * first), None)
        warned = WARNING.search(output)
        runs.append(
            {
                "consistency_temperature": tau,
                "overrides": overrides,
                "warning_step": int(warned.group(1)) if warned else None,
                "l_con_first": first,
                "l_con_below_tenth_at_step": fell,
                "spread_min": min((v for _, v in spread), default=None),
                "spread_last": spread[-1][1] if spread else None,
                "spread_every_10_steps": [(s, round(v, 4)) for s, v in spread if s % 10 == 0],
                "l_con_every_10_steps": [(s, round(v, 5)) for s, v in l_con if s % 10 == 0],
                "wall_s": round(wall, 1),
            }
        )
    return {"epochs": epochs, "runs": runs}


def markdown(report: dict[str, Any]) -> str:
    """The study's table for docs/results.md."""
    if report["study"] == "self_retrieval":
        epochs = sorted({int(e) for r in report["runs"] for e in r["self_retrieval_by_epoch"]})
        head = "| support set | exclude_self | " + " | ".join(f"epoch {e}" for e in epochs)
        lines = [head + " | kNN before → after | probe |", "|---" * (len(epochs) + 4) + "|"]
        for r in report["runs"]:
            by_epoch = {int(e): v for e, v in r["self_retrieval_by_epoch"].items()}
            rates = [by_epoch.get(e) for e in epochs]
            cells = " | ".join("–" if v is None else f"{100 * v:.1f}%" for v in rates)
            knn = (
                f"{r['knn_acc_before']:.1f} → {r['knn_acc_after']:.1f} | {r['probe_acc1']:.1f}"
                if r.get("finished", True)
                else f"stopped in epoch {r['last_epoch']} | –"
            )
            lines.append(
                f"| {r['queue_size']:,} | {str(r['exclude_self']).lower()} | {cells} | {knn} |"
            )
        return "\n".join(lines)
    lines = [
        "| τ_con | warning at step | l_con below 1/10 of its first value at step | "
        "spread min | spread last |",
        "|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['consistency_temperature']} | {r['warning_step'] or 'none'} | "
            f"{r['l_con_below_tenth_at_step'] or 'never'} | {r['spread_min']:.3f} | "
            f"{r['spread_last']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one study and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=("self_retrieval", "collapse"))
    parser.add_argument("--epochs", type=int, help="epochs per run (5 and 2 by default)")
    parser.add_argument(
        "--summarise", action="store_true", help="train nothing: report the runs as they stand"
    )
    args = parser.parse_args(argv)
    commit, dirty = git_commit()
    if args.study == "self_retrieval":
        result = self_retrieval(args.epochs or 5, not args.summarise)
    else:
        result = collapse(args.epochs or 2, not args.summarise)
    report = {
        "study": args.study,
        "command": f"python benchmarks/neighbour_study.py {' '.join(argv or sys.argv[1:])}",
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "dirty": dirty,
        "hardware": hardware("cpu"),
        **result,
    }
    out = RESULTS / f"neighbour_study_{args.study}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"[neighbour_study] written to {out}")
    return report


if __name__ == "__main__":
    main()
