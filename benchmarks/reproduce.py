"""Reproduction study: every method against its baseline with identical settings.

Each pair (method, baseline) shares backbone, data, augmentation, epochs, batch and seed;
both runs come from the same ``conf/experiment/*_cifar10.yaml`` recipe and differ only in
the neighbour part::

    nnclr  vs nnclr_no_nn  (method.use_nn=false)        experiment=nnclr_cifar10
    co2    vs mocov2       (α = 0)                       experiment=co2_cifar10
    snclr  vs mocov3       (k = 0)                       experiment=snclr_cifar10
    clim   vs mocov2       (the same mocov2 run as co2)  experiment=clim_cifar10
    cone   vs supervised   (CE only)                     experiment=cone_cifar10

Every run goes through ``nbr_contrast.app.api`` (the CLI's code path) into its own folder
``<runs-dir>/<run>_s<seed>``; a folder whose ``summary.json`` holds the same config is
reused, and one with the same config that stopped early is resumed from its ``last.ckpt``,
so an interrupted study continues where it stopped, and a study run with more seeds later
reuses the seeds it has. ``--jobs N`` trains N runs at once as
separate CLI processes sharing the device (small CIFAR runs leave an H100 mostly idle);
``--time-limit S`` stops them with a checkpoint after S seconds and exits with code 75, so
a study longer than one session's command limit is the same command run repeatedly.
Reported, final epoch: offline-style kNN accuracy (k=200, τ=0.1, cosine, backbone features
of un-augmented images, computed by ``tasks.fit``), the online linear probe
(self-supervised methods) and the classifier's top-1 (CoNe / supervised, from the run's
``csv/metrics.csv``). Writes ``<out>.json`` and ``<out>.md`` (table with deltas, exact
commands, commit, hardware).

    python benchmarks/reproduce.py --trainer gpu --epochs 50          # full CIFAR-10 npz
    python benchmarks/reproduce.py --trainer gpu --epochs 50 --jobs 4 --time-limit 540
    python benchmarks/reproduce.py --data cifar10_mini --epochs 1 --max-train-batches 4 \\
        --trainer cpu backbone.small_stem=false 'nnclr,snclr:method.pred_hidden_dim=256'
    python benchmarks/reproduce.py --preset smoke --time-limit 3600   # CPU smoke table, in pieces

Positional arguments are Hydra overrides for every run; ``RUN[,RUN...]:key=value`` applies
one to the named runs only (run names as above). ``--seeds 0,1,2`` trains every run once
per seed and reports mean ± standard deviation. ``--preset smoke`` is the CPU smoke scale
(:data:`PRESETS`): the same recipes on the built-in data at the quickstart's size, a check
that every method learns (ends above its random-init kNN), not a reproduction.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import lightning
import torch
from shared_data import default_data, npz_paths

from nbr_contrast import api
from nbr_contrast.app.build import to_container
from nbr_contrast.app.overrides import last_wins

REPO = Path(__file__).resolve().parents[1]
KNN_K, KNN_TAU = 200, 0.1


@dataclass(frozen=True)
class Run:
    """One training run of the study: its recipe overrides and whether it is supervised."""

    overrides: tuple[str, ...]
    supervised: bool = False


RUNS: dict[str, Run] = {
    "nnclr": Run(("experiment=nnclr_cifar10",)),
    "nnclr_no_nn": Run(("experiment=nnclr_cifar10", "method.use_nn=false")),
    "co2": Run(("experiment=co2_cifar10",)),
    "mocov2": Run(("experiment=co2_cifar10", "method=mocov2")),
    "snclr": Run(("experiment=snclr_cifar10",)),
    "mocov3": Run(("experiment=snclr_cifar10", "method=mocov3", "method.k=0")),
    "clim": Run(("experiment=clim_cifar10",)),
    "cone": Run(("experiment=cone_cifar10",), supervised=True),
    "supervised": Run(("experiment=cone_cifar10", "method=supervised"), supervised=True),
    "msf": Run(("experiment=msf_cifar10",)),
    "byol": Run(("experiment=msf_cifar10", "method=byol")),
}
# The CPU smoke scale: every recipe above on the built-in data at the quickstart's scale
# (16 px, ResNet-18 with the small-image stem, small heads, banks under one epoch of
# entries), 10 epochs of batch 128. Every value is ours; the methods' own views and
# optimisers come from their recipes. It checks that every method learns (ends above its
# random-init kNN), nothing more: it is not a reproduction. (At 100 steps of batch 64 no
# method had yet left the random-init kNN: training first lowers it.)
SSL = "nnclr,nnclr_no_nn,co2,mocov2,clim,snclr,mocov3"
MOMENTUM = "co2,mocov2,clim,snclr,mocov3,cone,supervised,msf,byol"
SMOKE_OVERRIDES = [
    "data.image_size=16",  # the recipe's views at 16 px (quickstart)
    "trainer.precision=auto",  # bf16 on CPUs with AMX / AVX-512 BF16
    "trainer.channels_last=true",
    "optim.warmup_epochs=1",  # 10% of the run
    f"{SSL},cone,supervised:method.proj_hidden_dim=512",
    f"{SSL},cone,supervised:method.proj_output_dim=128",
    "nnclr,nnclr_no_nn,snclr,mocov3:method.pred_hidden_dim=512",
    # banks under the 4,992 samples of an epoch: NNCLR's and SNCLR's support sets, MSF's bank
    "nnclr,nnclr_no_nn,snclr,mocov3,msf,byol:method.queue_size=4096",
    # MoCo v2's negative queue: both views' keys of the last 2 batches (256 samples, 5% of
    # the data; the MoCo CIFAR-10 demo's 4,096 of 50,000 is 8%). At 4,096 keys the queue
    # holds 41% of the samples, each image's own recent keys among them as negatives, and
    # the instance loss stalls near chance (docs/results.md)
    "co2,mocov2,clim:method.queue_size=512",
    # CO2's consistency temperature (recipe: the paper's 0.05). At 0.05 the consistency term
    # pulled every embedding together within 30 steps (instance loss at chance, ln 513, and
    # L_con near 0) and seed 1 ended below init (31.6 -> 29.9); at 0.1 the instance loss
    # falls from the first epoch (docs/results.md). MoCo v2 and CLIM have alpha 0: unused
    "co2:method.consistency_temperature=0.1",
    "nnclr,nnclr_no_nn:method.nn_warmup_steps=78",  # the quickstart's two epochs
    "clim:method.warmup_epochs=4",  # mixing from epoch 4 (recipe: 10)
    "clim:method.refresh_every=2",
    # CLIM's multi-resolution query at the views' 16 px (recipe: 3/4 of the side, ours too):
    # with the 12 px query CLIM ended below its random-init kNN (30.0 vs 31.3), at 16 px it
    # reached 37.0 (seed 0, docs/results.md); its baseline has no such view
    "clim:data.views.2.size=16",
    # a constant momentum of 0.99 (the MoCo CIFAR-10 demo's) so that 390 steps leave 2% of
    # the momentum encoder's random init (recipes: 0.99 -> 0.999 or 1, CoNe 0.996 -> 1)
    f"{MOMENTUM}:method.momentum=0.99",
    f"{MOMENTUM}:method.final_momentum=0.99",
]
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "data": "cifar10_mini",
        "epochs": 10,
        "batch_size": 128,
        "seeds": "0,1,2",
        "trainer": "cpu",
        "overrides": SMOKE_OVERRIDES,
    }
}
METRICS = ("knn_acc_before", "knn_acc", "linear_probe_acc1", "top1")

PAIRS: dict[str, str] = {
    "nnclr": "nnclr_no_nn",
    "co2": "mocov2",
    "snclr": "mocov3",
    "clim": "mocov2",
    "cone": "supervised",
    "msf": "byol",
}


def data_overrides(data: str) -> list[str]:
    """The data group (the method's recipe chooses the views) and npz paths."""
    out = [f"data={data}"]
    if data == "npz":
        out += npz_paths()
    return out


def split_overrides(extra: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Separate overrides for every run from ``RUN[,RUN]:key=value`` per-run ones.

    Raises:
        SystemExit: For a per-run override naming an unknown run.
    """
    common: list[str] = []
    per_run: dict[str, list[str]] = {name: [] for name in RUNS}
    for item in extra:
        head, sep, rest = item.partition(":")
        if not sep or "=" in head:
            common.append(item)
            continue
        names = head.split(",")
        unknown = [n for n in names if n not in RUNS]
        if unknown:
            raise SystemExit(f"Unknown run(s) {unknown} in {item!r}; runs: {', '.join(RUNS)}.")
        for name in names:
            per_run[name].append(rest)
    return common, per_run


def run_overrides(
    name: str, args: argparse.Namespace, common: list[str], own: list[str], seed: int | None = None
) -> list[str]:
    """Full override list of one run: recipe, data, shared schedule, then user overrides."""
    run = RUNS[name]
    out = [*run.overrides, *data_overrides(args.data), f"trainer={args.trainer}"]
    out += [
        f"trainer.max_epochs={args.epochs}",
        f"data.batch_size={args.batch_size}",
        f"seed={args.seeds[0] if seed is None else seed}",
        f"method.knn_k={KNN_K}",
        f"method.knn_temperature={KNN_TAU}",
        "trainer.enable_progress_bar=false",
        "plots=false",
    ]
    if args.max_train_batches:
        out.append(f"trainer.limit_train_batches={args.max_train_batches}")
    return out + common + own


def normalised(obj: Any) -> Any:
    """JSON round trip, so composed configs compare equal to the ones stored in summaries."""
    return json.loads(json.dumps(obj, default=str))


def last_logged(metrics_csv: Path, keys: list[str]) -> dict[str, float | None]:
    """Last logged value of each key in a Lightning ``metrics.csv`` (None if never logged)."""
    found: dict[str, float | None] = dict.fromkeys(keys)
    if not metrics_csv.is_file():
        return found
    with metrics_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            for key in keys:
                if row.get(key):
                    found[key] = float(row[key])
    return found


def first(*values: float | None) -> float | None:
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


STUDY_CONFIG = "study_config.json"
PENDING_EXIT = 75  # EX_TEMPFAIL: some runs were stopped by --time-limit; rerun to continue


# keys a run's config is not compared on: ``resume`` is how, not what, and ``output_dir``
# where (a study's folder may be moved)
NOT_COMPARED = ("resume", "output_dir")


def without_not_compared(plain: dict[str, Any]) -> dict[str, Any]:
    """A plain config without the :data:`NOT_COMPARED` keys."""
    return {k: v for k, v in plain.items() if k not in NOT_COMPARED}


def comparable(cfg: Any) -> Any:
    """A run's config as compared between invocations."""
    return without_not_compared(normalised(to_container(cfg)))


def plan(name: str, overrides: list[str], run_dir: Path) -> str:
    """What to do with a run folder: ``reuse`` it, ``resume`` it, or train it ``fresh``.

    ``reuse``: its ``summary.json`` holds the same config (the run finished). ``resume``: a
    run with the same config (``study_config.json``) stopped early and left
    ``checkpoints/last.ckpt``. Anything else is removed and trained from scratch.
    """
    wanted = comparable(api.compose(overrides, output_dir=run_dir))
    summary_path, study_path = run_dir / "summary.json", run_dir / STUDY_CONFIG
    if summary_path.is_file():
        stored = json.loads(summary_path.read_text()).get("config")
        if stored is not None and without_not_compared(stored) == wanted:
            return "reuse"
    same = study_path.is_file() and json.loads(study_path.read_text()) == wanted
    if same and (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "resume"
    if run_dir.exists():
        print(f"[reproduce] {name}: config changed or run incomplete, removing {run_dir}")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    study_path.write_text(json.dumps(wanted, indent=1) + "\n")
    return "fresh"


def cli_command(overrides: list[str], run_dir: Path, resume: bool) -> list[str]:
    """The ``python -m nbr_contrast`` command line of one run."""
    extra = ["resume=true"] if resume else []
    words = last_wins([*overrides, *extra])
    return ["python", "-m", "nbr_contrast", *words, f"hydra.run.dir={run_dir}"]


def run_name(key: str) -> str:
    """The run of a study key (``nnclr@1`` is seed 1 of ``nnclr``)."""
    return key.split("@", 1)[0]


def train(name: str, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Fit one run in this process (or reuse / resume it, see :func:`plan`); return its record."""
    action = plan(name, overrides, run_dir)
    print(f"[reproduce] {name}: {action} in {run_dir}", flush=True)
    if action != "reuse":
        extra = ["resume=true"] if action == "resume" else []
        api.fit(api.compose([*overrides, *extra], output_dir=run_dir))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return record(name, overrides, run_dir, reused=action == "reuse")


def train_in_subprocesses(
    todo: list[tuple[str, list[str], Path]], jobs: int, time_limit: float | None
) -> tuple[dict[str, str], list[str]]:
    """Train runs as concurrent CLI processes (at most ``jobs`` at a time, sharing the GPU).

    Each process gets ``cpu_count // jobs`` intra-op threads and logs to ``<run>.log`` next
    to its folder. At ``time_limit`` seconds every running process gets SIGTERM (it saves
    ``last.ckpt`` and exits; the next invocation resumes it) and no new one starts.

    Returns:
        ``(failed, reused)``: error text per failed run, and the runs that were already done.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}
    deadline = None if time_limit is None else time.time() + time_limit
    queue = list(todo)
    running: dict[str, tuple[subprocess.Popen[bytes], IO[str]]] = {}
    failed: dict[str, str] = {}
    reused: list[str] = []
    stopping = False
    while running or (queue and not stopping):
        while queue and len(running) < jobs and not stopping:
            name, overrides, run_dir = queue.pop(0)
            action = plan(name, overrides, run_dir)
            if action == "reuse":
                reused.append(name)
                continue
            command = [sys.executable, *cli_command(overrides, run_dir, action == "resume")[1:]]
            log = run_dir.with_suffix(".log").open("a")
            print(f"[reproduce] {name}: {action} in {run_dir} (log {log.name})", flush=True)
            running[name] = (subprocess.Popen(command, stdout=log, stderr=log, env=env), log)
        if deadline is not None and time.time() >= deadline and not stopping:
            stopping = True
            for name, (proc, _) in running.items():
                print(f"[reproduce] {name}: time limit reached, stopping it", flush=True)
                proc.terminate()
        for name, (proc, log) in list(running.items()):
            code = proc.wait() if stopping else proc.poll()
            if code is None:
                continue
            log.close()
            del running[name]
            if code != 0 and not stopping:
                failed[name] = f"exit code {code}; see {log.name}"
        time.sleep(0.5 if running else 0.0)
    return failed, reused


def record(name: str, overrides: list[str], run_dir: Path, reused: bool) -> dict[str, Any]:
    """The study's record of a finished run, from its ``summary.json`` and ``metrics.csv``."""
    summary = json.loads((run_dir / "summary.json").read_text())
    logged = last_logged(
        run_dir / "csv" / "metrics.csv",
        ["val/acc1", "val/probe_acc1", "val/knn_acc", "epoch"],
    )
    return {
        "method": summary["method"],
        "seed": summary.get("config", {}).get("seed"),
        "supervised": RUNS[name].supervised,
        "output_dir": str(run_dir),
        "overrides": overrides,
        "command": shlex.join(cli_command(overrides, run_dir, resume=False)),
        "reused": reused,
        "resumed_from": summary.get("resumed_from"),
        "epochs": summary.get("epochs"),
        "steps": summary.get("steps"),
        "train_seconds": summary.get("train_seconds"),
        "knn_acc_before": summary.get(f"knn_acc_before@{KNN_K}"),
        "knn_acc": summary.get(f"knn_acc_after@{KNN_K}"),
        "online_knn_acc": summary.get("online_knn_acc"),
        "linear_probe_acc1": first(summary.get("linear_probe_acc1"), logged["val/probe_acc1"]),
        "top1": logged["val/acc1"],
    }


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation of each metric over a run's seeds."""
    out: dict[str, Any] = {"seeds": [r.get("seed") for r in records], "std": {}}
    out["above_init"] = all(
        r.get("knn_acc") is not None
        and r.get("knn_acc_before") is not None
        and r["knn_acc"] > r["knn_acc_before"]
        for r in records
    )
    for key in METRICS:
        values = [r[key] for r in records if r.get(key) is not None]
        out[key] = statistics.fmean(values) if values else None
        out["std"][key] = statistics.stdev(values) if len(values) > 1 else None
    return out


def delta(a: float | None, b: float | None) -> float | None:
    """``a - b`` when both exist."""
    return None if a is None or b is None else a - b


def pair_rows(runs: dict[str, dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """One entry per (method, baseline) with each metric's values and delta."""
    rows = []
    for method in methods:
        base = PAIRS[method]
        keys = ["knn_acc", "top1" if RUNS[method].supervised else "linear_probe_acc1"]
        metrics = {
            key: {
                "method": runs[method][key],
                "baseline": runs[base][key],
                "delta": delta(runs[method][key], runs[base][key]),
                "method_std": runs[method].get("std", {}).get(key),
                "baseline_std": runs[base].get("std", {}).get(key),
            }
            for key in keys
        }
        rows.append({"method": method, "baseline": base, "metrics": metrics})
    return rows


def git_commit() -> tuple[str, bool]:
    """HEAD commit of the repository and whether the work tree has uncommitted changes."""

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))


def hardware(trainer: str) -> dict[str, Any]:
    """Device name, CPU count and library versions."""
    cuda = trainer == "gpu" and torch.cuda.is_available()
    cpu_name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu_name = names[0] if names else cpu_name
    return {
        "device": "cuda" if cuda else "cpu",
        "device_name": torch.cuda.get_device_name() if cuda else cpu_name,
        "gpu_count": torch.cuda.device_count(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }


def fmt(x: float | None, signed: bool = False, std: float | None = None) -> str:
    """Percent with two decimals, ``± std`` when given (``n/a`` when missing)."""
    if x is None:
        return "n/a"
    text = f"{x:+.2f}" if signed else f"{x:.2f}"
    return text if std is None else f"{text} ± {std:.2f}"


def run_table(report: dict[str, Any]) -> list[str]:
    """One row per run: kNN at random init and after training, probe or top-1."""
    lines = [
        "| run | seeds | kNN at init | kNN after | Δ vs init | every seed above init "
        "| probe / top-1 |",
        "|---|---:|---:|---:|---:|:---:|---:|",
    ]
    for name, agg in report["summary"].items():
        second = "top1" if RUNS[name].supervised else "linear_probe_acc1"
        std = agg["std"]
        label = "top-1" if second == "top1" else "probe"
        lines.append(
            f"| {name} | {len(agg['seeds'])} "
            f"| {fmt(agg['knn_acc_before'], std=std['knn_acc_before'])} "
            f"| {fmt(agg['knn_acc'], std=std['knn_acc'])} "
            f"| {fmt(delta(agg['knn_acc'], agg['knn_acc_before']), True)} "
            f"| {'yes' if agg['above_init'] else 'NO'} "
            f"| {fmt(agg[second], std=std[second])} ({label}) |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The study as a markdown table with settings, commands, commit and hardware."""
    s, hw = report["settings"], report["hardware"]
    seeds = s["seeds"]
    title = (
        "Smoke-scale check (not a reproduction)"
        if s.get("preset") == "smoke"
        else ("Reproduction study")
    )
    lines = [
        f"# {title}: {s['data']}, {s['epochs']} epoch(s), batch {s['batch_size']}, "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}",
        "",
        f"Commit `{report['commit']}`{' (with uncommitted changes)' if report['dirty'] else ''}; "
        f"{hw['device_name']} ({hw['device']}), {hw['cpu_count']} CPUs, torch {hw['torch']}; "
        f"{report['total_seconds'] / 60:.1f} min wall clock in all "
        f"({report['total_cpu_seconds'] / 60:.1f} min of CPU time in the driver's process).",
        "",
        f"kNN: k={KNN_K}, τ={KNN_TAU}, cosine, backbone features of un-augmented images. "
        "Probe: online linear probe on detached backbone features. Top-1: the classifier "
        "(CoNe / supervised). All at the final epoch; Δ = method − baseline, in points"
        + (
            "; mean ± sample standard deviation over the seeds each run has finished."
            if len(seeds) > 1
            else "."
        ),
        "",
        "| method | baseline | kNN method | kNN baseline | Δ kNN | probe / top-1 method "
        "| probe / top-1 baseline | Δ probe / top-1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["pairs"]:
        m = row["metrics"]
        second = m.get("top1") or m["linear_probe_acc1"]
        label = "top-1" if "top1" in m else "probe"
        knn = m["knn_acc"]
        lines.append(
            f"| {row['method']} | {row['baseline']} | {fmt(knn['method'], std=knn['method_std'])} "
            f"| {fmt(knn['baseline'], std=knn['baseline_std'])} | {fmt(knn['delta'], True)} "
            f"| {fmt(second['method'], std=second['method_std'])} ({label}) "
            f"| {fmt(second['baseline'], std=second['baseline_std'])} "
            f"| {fmt(second['delta'], True)} |"
        )
    lines += ["", *run_table(report)]
    if report.get("pending"):
        lines += [
            "",
            f"Not finished yet (rerun the driver to continue): {', '.join(report['pending'])}.",
        ]
    lines += ["", "Driver:", "", "```bash", report["command"], "```", "", "Runs:", "", "```bash"]
    lines += [run["command"] for run in report["runs"].values()]
    lines += ["```", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a named scale (its data, epochs, batch, seeds, trainer and overrides are the "
        "defaults; flags and overrides given here still apply)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="data group: npz (full CIFAR-10 from ../shared/data), cifar10_mini, ...",
    )
    parser.add_argument("--epochs", type=int, default=None, help="default 50")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256")
    parser.add_argument(
        "--methods", default=",".join(PAIRS), help=f"comma-separated subset of {','.join(PAIRS)}"
    )
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds, one run each (default 42)"
    )
    parser.add_argument(
        "--max-train-batches", type=int, default=0, help="training batches per epoch (0: all)"
    )
    parser.add_argument("--trainer", choices=["gpu", "cpu"], default=None)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output stem: writes <out>.json and <out>.md "
        "(default benchmarks/results/reproduce_<trainer>)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once, as separate processes sharing the device (1: in this process)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds; then running runs are stopped with a checkpoint and the driver exits "
        f"with code {PENDING_EXIT}; the same command resumes them (implies process mode)",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="parent of the run folders (default outputs/reproduce/<out name>)",
    )
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("--")]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    preset = PRESETS.get(args.preset or "", {})
    defaults = {
        "data": default_data(),
        "epochs": 50,
        "batch_size": 256,
        "seeds": "42",
        "trainer": "gpu" if torch.cuda.is_available() else "cpu",
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key, value))
    args.seeds = [int(x) for x in str(args.seeds).split(",") if x]
    extra = [*preset.get("overrides", []), *extra]
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in PAIRS]
    if bad:
        parser.error(f"unknown method(s) {bad}; choose from {', '.join(PAIRS)}")
    args.methods = methods
    stem = f"reproduce_{args.trainer}" + (f"_{args.preset}" if args.preset else "")
    args.out = args.out or REPO / "benchmarks" / "results" / stem
    args.runs_dir = args.runs_dir or Path("outputs") / "reproduce" / args.out.name
    return args, extra


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, extra = parse_args(argv)
    common, per_run = split_overrides(extra)
    names = list(dict.fromkeys(n for m in args.methods for n in (m, PAIRS[m])))
    start, cpu_start = time.time(), time.process_time()
    several = len(args.seeds) > 1
    todo = [
        (
            f"{n}@{seed}" if several else n,
            run_overrides(n, args, common, per_run[n], seed),
            args.runs_dir / f"{n}_s{seed}",
        )
        for seed in args.seeds
        for n in names
    ]
    runs: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    pending: list[str] = []
    if args.jobs > 1 or args.time_limit is not None:
        failed, reused = train_in_subprocesses(todo, args.jobs, args.time_limit)
        for key, overrides, run_dir in todo:
            if (run_dir / "summary.json").is_file():
                runs[key] = record(run_name(key), overrides, run_dir, reused=key in reused)
            elif key not in failed:
                pending.append(key)
    else:
        for key, overrides, run_dir in todo:
            try:
                runs[key] = train(run_name(key), overrides, run_dir)
            except Exception as err:  # one failed run must not lose the others' results
                failed[key] = f"{type(err).__name__}: {err}"
                print(f"[reproduce] {key} FAILED: {failed[key]}", file=sys.stderr, flush=True)
    # each run over the seeds it has finished (a stopped study reports what it has; the
    # table's seed count says how many)
    finished = {
        n: [runs[k] for s in args.seeds if (k := f"{n}@{s}" if several else n) in runs]
        for n in names
    }
    summary = {n: aggregate(records) for n, records in finished.items() if records}
    done = [
        m
        for m in args.methods
        if m in summary
        and PAIRS[m] in summary
        and summary[m]["seeds"] == summary[PAIRS[m]]["seeds"]  # deltas over the same seeds
    ]
    commit, dirty = git_commit()
    report: dict[str, Any] = {
        "commit": commit,
        "dirty": dirty,
        "hardware": hardware(args.trainer),
        "command": "python benchmarks/reproduce.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            "preset": args.preset,
            "data": args.data,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seeds": args.seeds,
            "trainer": args.trainer,
            "max_train_batches": args.max_train_batches or None,
            "overrides": extra,
            "knn": {
                "k": KNN_K,
                "temperature": KNN_TAU,
                "metric": "cosine",
                "features": "backbone, un-augmented images, final epoch",
            },
            "probe": "online linear probe on detached backbone features, final epoch",
            "top1": "classifier top-1 (val/acc1) for supervised methods, final epoch",
        },
        "total_seconds": round(time.time() - start, 1),
        "total_cpu_seconds": round(time.process_time() - cpu_start, 1),
        "pairs": pair_rows(summary, done),
        "summary": summary,
        "runs": runs,
        "failed": failed,
        "pending": pending,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {', '.join(failed)}")
    if pending:
        print(
            f"[reproduce] {len(pending)} run(s) not finished ({', '.join(pending)}): "
            "run the same command again to continue them.",
            flush=True,
        )
        raise SystemExit(PENDING_EXIT)
    return report


if __name__ == "__main__":
    main()
