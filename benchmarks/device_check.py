"""One device check: throughput, views, search and a wait/kernel audit, in one run.

Measures, in this order, writing ``device_check.json`` and ``device_check.md`` into the
folder given on the command line after each part (so a run cut short keeps what it
measured):

1. ``bare``: ResNet-18 with the NNCLR heads, forward and backward on pre-made device
   tensors in a plain loop (no Lightning, no bank), eager and compiled: the ceiling.
2. ``throughput``: NNCLR and CO2 training steps (``benchmarks/throughput.py``) in the
   ``ceiling``, GPU-pipeline eager, GPU-pipeline compiled and CPU-pipeline modes.
3. ``views``: the GPU view pipeline eager and compiled (``benchmarks/augment.py``).
4. ``search``: exact top-k of 512 queries over banks of 65,536 and 1,281,167 entries with
   every backend present (``benchmarks/search.py``) in fp16 (bf16 on the CPU), and the
   two-stage top-k (per-chunk top-k of the whole bank, then one merge) beside the torch
   backend's running merge.
5. ``audit``: NNCLR GPU-pipeline steps after warm-up under
   ``torch.cuda.set_sync_debug_mode("warn")`` (host waits per step) and the profiler
   (kernel launches per step, device busy share); on the CPU, host reads and dispatched
   ops per step (``benchmarks/opcount.py``).
6. ``lightly``: lightly's NNCLR on the same tensors, when lightly is importable.

On one GPU the whole check is sized for 8 minutes; ``--device cpu --quick`` runs every part
with tiny sizes, sized for two minutes (what the test runs), leaving out the compiled
variants (compiling on the CPU alone takes minutes); they are marked as skipped.

    python benchmarks/device_check.py benchmarks/results/device_check_h200
    python benchmarks/device_check.py /tmp/check --device cpu --quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import augment
import lightning as L
import search
import throughput
import torch
from opcount import OpCounter, sections
from shared_data import default_data

from nbr_contrast import api
from nbr_contrast.app.build import build_callbacks, build_datamodule, build_method, build_trainer
from nbr_contrast.data.config import DataConfig, ViewConfig
from nbr_contrast.data.gpu_views import GpuViews
from nbr_contrast.neighbours.search import TorchSearch

FULL = {"batch": 512, "warmup": 15, "steps": 40, "banks": search.BANKS, "view_s": 3.0}
SKIP_COMPILED = "--quick leaves out compilation"
QUICK = {"batch": 16, "warmup": 2, "steps": 3, "banks": (4_096, 16_384), "view_s": 0.3}


class Report:
    """Results by part, written as JSON and a markdown table after each part."""

    def __init__(self, folder: Path, header: dict[str, Any]) -> None:
        self.folder = folder
        self.data: dict[str, Any] = {**header, "parts": {}}
        self.rows: list[tuple[str, str, str]] = []
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, part: str, result: Any, rows: list[tuple[str, str]]) -> None:
        """Record one part and rewrite both files."""
        self.data["parts"][part] = result
        self.rows += [(part, what, value) for what, value in rows]
        (self.folder / "device_check.json").write_text(json.dumps(self.data, indent=2) + "\n")
        lines = [
            f"Device check: {self.data['device_name']}, torch {self.data['torch']}, "
            f"{self.data['date']}",
            "",
            "| part | measurement | value |",
            "|---|---|---:|",
            *(f"| {p} | {w} | {v} |" for p, w, v in self.rows),
        ]
        (self.folder / "device_check.md").write_text("\n".join(lines) + "\n")


def shown(value: Any, unit: str = "") -> str:
    """A table cell: numbers with thousands separators and ``unit``, text as it is."""
    return f"{value:,.0f}{unit}" if isinstance(value, int | float) else str(value)


def sync(device: torch.device) -> None:
    """Wait for ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(
    step: Callable[[], object], images: int, warmup: int, steps: int, dev: torch.device
) -> float:
    """Images per second of ``step`` over ``steps`` calls after ``warmup``, timed as a window."""
    for _ in range(warmup):
        step()
    sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps * images / (time.perf_counter() - start)


def compose(device: torch.device, size: dict[str, Any], *extra: str) -> Any:
    """The NNCLR run config of the check (``trainer=gpu`` on CUDA)."""
    trainer = "gpu" if device.type == "cuda" else "cpu"
    overrides = [
        "experiment=nnclr_cifar10",
        f"trainer={trainer}",
        f"data.batch_size={size['batch']}",
        "trainer.compile=false",
        "plots=false",
        *extra,
    ]
    # The check's trainers run without loggers or checkpoints: nothing is written to this
    # folder, so it is named but not created (a fresh temporary folder per call was left behind).
    return api.compose(overrides, output_dir=Path(tempfile.gettempdir()) / "device-check-run")


def bare(device: torch.device, size: dict[str, Any], compiled: bool) -> float:
    """ResNet-18 + NNCLR heads forward/backward + SGD on pre-made tensors: images/s."""
    cfg = compose(device, size)
    method = build_method(cfg).to(device)
    modules = [method.backbone, method.projector, method.predictor]
    if compiled:
        for module in modules:
            module.compile()
    batch = throughput.premade_batch(size["batch"], 10, device, 0)
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = sum(
                method.predictor(method.projector(method.features(v))).float().square().mean()
                for v in batch["views"]
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return rate(step, size["batch"], size["warmup"], size["steps"], device)


def throughput_modes(device: torch.device, size: dict[str, Any], quick: bool) -> dict[str, Any]:
    """NNCLR and CO2 in the four modes of ``benchmarks/throughput.py``."""
    trainer = "gpu" if device.type == "cuda" else "cpu"
    out: dict[str, Any] = {}
    data = "cifar10_mini" if quick else default_data()
    for experiment in ("nnclr_cifar10", "co2_cifar10"):
        for name, mode, compiled in (
            ("ceiling", "ceiling", False),
            ("gpu eager", "gpu", False),
            ("gpu compiled", "gpu", True),
            ("cpu pipeline", "cpu", False),
        ):
            if compiled and quick:
                out[f"{experiment} {name}"] = {"skipped": SKIP_COMPILED}
                continue
            argv = [
                f"--trainer={trainer}",
                f"--data={data}",
                f"--batch-size={size['batch']}",
                f"--warmup={size['warmup']}",
                f"--steps={size['steps']}",
                f"--experiment={experiment}",
                f"--modes={mode}",
                "--workers=0" if quick else "--workers=8",
                *(["--compile"] if compiled else []),
                "trainer.compile=" + ("true" if compiled else "false"),
            ]
            args = throughput.parse_args(argv)
            with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
                out[f"{experiment} {name}"] = throughput.run_mode(mode, args, Path(tmp))
    return out


def views(device: torch.device, size: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Two 32 px views of a uint8 batch, eager and compiled: images/s and ops per batch."""
    data = DataConfig()
    pair = [ViewConfig(size=32), ViewConfig(size=32)]
    images = torch.randint(0, 256, (size["batch"], 3, 32, 32), dtype=torch.uint8, device=device)
    out: dict[str, Any] = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        if compiled and quick:
            out[name] = {"skipped": SKIP_COMPILED}
            continue
        make = GpuViews(pair, data.mean, data.std, compile=compiled).to(device)
        for _ in range(2):
            make(images)
        images_per_s, _ = augment.images_per_second(
            lambda make=make: make(images), size["batch"], lambda: sync(device), size["view_s"]
        )
        ops = augment.dispatched_ops(lambda make=make: make(images))
        out[name] = {"images_per_s": images_per_s, "ops_per_batch": ops}
    return out


def two_stage_topk(
    queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k``: the top-``k`` of every chunk of keys, then one top-``k`` of those."""
    dtype = torch.float16 if keys.is_cuda else torch.bfloat16
    q = queries.to(dtype)
    sims, ids = [], []
    for start in range(0, keys.shape[0], chunk):
        s, i = (q @ keys[start : start + chunk].to(dtype).T).topk(
            min(k, keys.shape[0] - start), dim=1
        )
        sims.append(s)
        ids.append(i + start)
    best, order = torch.cat(sims, dim=1).topk(k, dim=1)
    return best.float(), torch.cat(ids, dim=1).gather(1, order)


def searches(device: torch.device, size: dict[str, Any], quick: bool) -> dict[str, Any]:
    """fp16/bf16 exact search with every backend present, and the two-stage top-k."""
    out: dict[str, Any] = {}
    queries = search.random_unit(search.BATCH if not quick else 64, device, 1)
    repeats = 3 if quick else 10
    for n in size["banks"]:
        keys = search.random_unit(n, device, 2)
        for name, precision, backend, where in search.backends(device):
            if isinstance(backend, TorchSearch) and not backend.half:
                continue
            on = keys.to(where)
            label = "torch (running merge)" if name == "torch" else name
            key = f"{label} {precision} {n:,} k=1"
            out[key] = search.time_ms(backend, queries.to(where), on, 1, 1, repeats)
        half = "fp16" if device.type == "cuda" else "bf16"

        class TwoStage:
            def topk(self, q: torch.Tensor, x: torch.Tensor, k: int) -> Any:
                return two_stage_topk(q, x, k, max(1, x.shape[0] // 16))

        two_stage: Any = TwoStage()
        out[f"two-stage {half} {n:,} k=1"] = search.time_ms(two_stage, queries, keys, 1, 1, repeats)
        del keys
    return out


def audit(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """Host waits, launches and device busy share per steady-state NNCLR GPU-pipeline step."""
    steps = size["steps"]
    cfg = compose(
        device,
        size,
        "data.pipeline=gpu",
        "data=cifar10_mini",
        "data.num_workers=0",
        f"trainer.max_steps={size['warmup'] + steps + 1}",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=100000",
    )
    method = build_method(cfg)
    counter = OpCounter()
    window = Window(size["warmup"], size["warmup"] + steps, device)
    with sections(counter, method) as hooks, counter, window.waits():
        keep = [c for c in build_callbacks(cfg) if not isinstance(c, throughput.SKIPPED)]
        trainer = build_trainer(
            cfg,
            callbacks=[*keep, hooks, window],
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
        trainer.fit(method, datamodule=build_datamodule(cfg))
    counted = counter.summary(list(range(size["warmup"], size["warmup"] + steps)))
    return {**counted, **window.result(steps)}


class Window(L.Callback):
    """Profiles steps ``[first, last)`` and counts the host waits torch reports there."""

    def __init__(self, first: int, last: int, device: torch.device) -> None:
        self.first, self.last, self.device = first, last, device
        self.profiler: torch.profiler.profile | None = None
        self.began = self.ended = 0.0
        self.sync_warnings = 0
        self.inside = False

    @contextlib.contextmanager
    def waits(self) -> Any:
        """Count ``set_sync_debug_mode`` warnings raised inside the window (CUDA only)."""
        if self.device.type != "cuda":
            yield
            return
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.caught = caught
                yield
        finally:
            torch.cuda.set_sync_debug_mode("default")

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.first:
            sync(self.device)
            self.began = time.perf_counter()
            self.profiler = torch.profiler.profile(activities=self.activities())
            self.profiler.__enter__()
            self.seen = len(getattr(self, "caught", []))
            self.inside = True

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.last and self.profiler is not None:
            sync(self.device)
            self.ended = time.perf_counter()
            self.profiler.__exit__(None, None, None)
            caught = getattr(self, "caught", [])
            self.sync_warnings = sum("synchroniz" in str(w.message) for w in caught[self.seen :])
            self.inside = False

    def activities(self) -> list[torch.profiler.ProfilerActivity]:
        found = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            found.append(torch.profiler.ProfilerActivity.CUDA)
        return found

    def result(self, steps: int) -> dict[str, Any]:
        """Waits, launches and busy share per step of the window."""
        wall = max(self.ended - self.began, 1e-9)
        out: dict[str, Any] = {"wall_ms_per_step": 1000 * wall / steps}
        if self.profiler is None:
            return out
        events = self.profiler.events()
        launches = sum(e.name in ("cudaLaunchKernel", "cuLaunchKernel") for e in events)
        device_us = sum(
            e.device_time_total
            for e in events
            if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
        )
        out.update(
            {
                "sync_warnings_per_step": self.sync_warnings / steps,
                "kernel_launches_per_step": launches / steps,
                "device_busy_share": device_us / 1e6 / wall,
            }
        )
        return out


def lightly(device: torch.device, size: dict[str, Any]) -> dict[str, Any]:
    """lightly's NNCLR on pre-made tensors (``benchmarks/throughput.py`` mode ``lightly``)."""
    trainer = "gpu" if device.type == "cuda" else "cpu"
    args = throughput.parse_args(
        [
            f"--trainer={trainer}",
            "--data=cifar10_mini",
            f"--batch-size={size['batch']}",
            f"--warmup={size['warmup']}",
            f"--steps={size['steps']}",
            "--modes=lightly",
        ]
    )
    with tempfile.TemporaryDirectory(prefix="lightly-") as tmp:
        return throughput.run_mode("lightly", args, Path(tmp))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where device_check.json/.md are written")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU test)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible; use --device cpu --quick")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    size = QUICK if args.quick else FULL
    header = {
        **throughput.environment("gpu" if device.type == "cuda" else "cpu"),
        "date": time.strftime("%Y-%m-%d"),
        "quick": args.quick,
        "batch_size": size["batch"],
    }
    report = Report(args.folder, header)
    began = time.perf_counter()

    ceiling: dict[str, Any] = {"eager": bare(device, size, False)}
    ceiling["compiled"] = SKIP_COMPILED if args.quick else bare(device, size, True)
    report.add("bare", ceiling, [(f"{k} img/s", shown(v)) for k, v in ceiling.items()])

    modes = throughput_modes(device, size, args.quick)
    report.add(
        "throughput",
        modes,
        [(k, shown(v.get("images_per_s", v.get("skipped")), " img/s")) for k, v in modes.items()],
    )

    made = views(device, size, args.quick)
    report.add(
        "views",
        made,
        [(k, shown(v.get("images_per_s", v.get("skipped")), " img/s")) for k, v in made.items()],
    )

    found = searches(device, size, args.quick)
    report.add("search", found, [(k, f"{v:.2f} ms") for k, v in found.items()])

    audited = audit(device, size)
    rows = [
        ("host reads per step", f"{audited['host_reads_per_step']['total']:.1f}"),
        ("ops per step", f"{audited['ops_per_step']['total']:.0f}"),
        ("wall ms per step", f"{audited['wall_ms_per_step']:.1f}"),
    ]
    rows += [
        (k.replace("_", " "), f"{audited[k]:.2f}")
        for k in ("sync_warnings_per_step", "kernel_launches_per_step", "device_busy_share")
        if k in audited
    ]
    report.add("audit", audited, rows)

    reference = lightly(device, size)
    value = reference.get("skipped") or f"{reference['images_per_s']:,.0f} img/s"
    report.add("lightly", reference, [("NNCLR", str(value))])
    report.data["seconds"] = time.perf_counter() - began
    report.add(
        "total", {"seconds": report.data["seconds"]}, [("seconds", f"{report.data['seconds']:.0f}")]
    )
    return report.data


if __name__ == "__main__":
    main()
