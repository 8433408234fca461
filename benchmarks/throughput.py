"""Training throughput of NNCLR (ResNet-18, two 32 px views): data pipelines against a ceiling.

Modes, each a real ``Trainer.fit`` built by ``nbr_contrast.app.build`` from
``experiment=nnclr_cifar10`` or ``--experiment`` (so the same step, optimiser,
neighbour-index callback, precision and compile settings as a training run):

* ``cpu``: ``data.pipeline=cpu`` (per-sample torchvision views in loader workers);
* ``gpu``: ``data.pipeline=gpu`` (dataset resident on the device, batched ``GpuViews``;
  it also runs on a CPU);
* ``ceiling``: the same training step fed one pre-made batch of random view tensors that
  already lives on the device (no data pipeline at all): the GPU-resident-tensor ceiling;
* ``lightly``: lightly's NNCLR modules (projection / prediction heads, memory bank,
  NT-Xent) on the same backbone and the same pre-made tensors, in a plain PyTorch loop,
  as an outside reference. Skipped with a note when ``lightly`` is not installed
  (``pip install -e ".[bench]"``).

Throughput is images per second in steady state: the time from the end of optimiser step
``--warmup`` to the end of the last step (``--steps`` more), CUDA synchronised at those two
steps only (so host and device work overlap as in training); one image yields two views.
Peak GPU memory is reported on CUDA. Writes a JSON file.

``--count-ops`` counts instead of timing: dispatched torch ops and host reads per step, split
into backbone forward, backward, heads+loss, search/bank, optimiser, logging, views and
loader (``benchmarks/opcount.py``).

    python benchmarks/throughput.py --trainer gpu                     # bf16, channels-last
    python benchmarks/throughput.py --trainer gpu --compile --batch-size 1024
    python benchmarks/throughput.py --trainer cpu --data cifar10_mini --batch-size 32 \\
        --warmup 2 --steps 5 --out benchmarks/results/throughput_cpu.json
    python benchmarks/throughput.py --trainer cpu --data cifar10_mini --batch-size 32 \\
        --warmup 3 --steps 10 --modes gpu,ceiling --count-ops \\
        --out benchmarks/results/opcount_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig
from opcount import OpCounter, sections
from shared_data import default_data, npz_paths
from torch.utils.data import DataLoader, IterableDataset

from nbr_contrast import api
from nbr_contrast.app.build import build_callbacks, build_datamodule, build_method, build_trainer
from nbr_contrast.models.backbones import build_backbone, feature_dim, forward_features

REPO = Path(__file__).resolve().parents[1]
MODES = ("cpu", "gpu", "ceiling", "lightly")
VIEW_SIZE = 32
SKIPPED = (ModelCheckpoint, LearningRateMonitor, RichProgressBar)
"""Callbacks a measured fit leaves out (no checkpoints, LR logging or progress bar)."""


class StepTimer(L.Callback):
    """Wall-clock time at the end of optimiser steps ``warmup`` and ``last`` only.

    The device is synchronised at those two steps alone, so the timed window keeps the
    overlap of host and device work that training has.
    """

    def __init__(self, cuda: bool, warmup: int, last: int) -> None:
        self.cuda = cuda
        self.marks = (warmup, last)
        self.times: dict[int, float] = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.global_step in self.marks:
            if self.cuda:
                torch.cuda.synchronize()
            self.times[trainer.global_step] = time.perf_counter()


class RepeatBatch(IterableDataset[dict[str, Any]]):
    """The same pre-made batch, forever (the loader adds nothing: ``batch_size=None``).

    ``batch_size`` tells the method the size of the batches it yields (its learning rate
    follows the loader's batch).
    """

    def __init__(self, batch: dict[str, Any]) -> None:
        self.batch = batch
        self.batch_size = int(batch["sample_id"].shape[0])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.batch


def steady_state(times: dict[int, float], warmup: int, last: int, batch: int) -> dict[str, Any]:
    """Images/s and mean step time between the end of step ``warmup`` and of step ``last``."""
    if warmup < 1 or warmup not in times or last not in times or last <= warmup:
        raise RuntimeError(
            f"steps {sorted(times)} were timed with --warmup={warmup}; need 1 <= warmup < steps"
        )
    steps = last - warmup
    elapsed = times[last] - times[warmup]
    return {
        "images_per_s": steps * batch / elapsed,
        "timed_steps": steps,
        "warmup_steps": warmup,
        "mean_step_ms": 1000 * elapsed / steps,
        "seconds": elapsed,
    }


def compose(args: argparse.Namespace, pipeline: str, out_dir: Path) -> DictConfig:
    """The run config of one mode (``--experiment``, NNCLR by default)."""
    overrides = [
        f"experiment={args.experiment}",
        f"data={args.data}",
        f"trainer={args.trainer}",
        f"data.pipeline={pipeline}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        f"trainer.max_steps={args.warmup + args.steps}",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "plots=false",
        f"seed={args.seed}",
    ]
    if args.data == "npz":
        overrides += npz_paths()
    if args.precision:
        overrides.append(f"trainer.precision={args.precision}")
    if args.channels_last is not None:
        overrides.append(f"trainer.channels_last={str(args.channels_last).lower()}")
    if args.compile:
        overrides.append("trainer.compile=true")
    return api.compose([*overrides, *args.overrides], output_dir=out_dir)


def fit_and_time(
    cfg: DictConfig, args: argparse.Namespace, loader: DataLoader[Any] | None
) -> dict[str, Any]:
    """Run ``Trainer.fit`` for warm-up + timed steps; return the steady-state numbers.

    With ``--count-ops`` the steps are not timed: every dispatched op is counted instead,
    split by :data:`opcount.SECTIONS`, averaged over the steps after warm-up.
    """
    L.seed_everything(int(cfg.seed))
    cuda = cfg.trainer.accelerator in ("gpu", "cuda")
    last = args.warmup + args.steps
    timer = StepTimer(cuda, args.warmup, last)
    callbacks = [c for c in build_callbacks(cfg) if not isinstance(c, SKIPPED)]
    method = build_method(cfg)
    counter = OpCounter() if args.count_ops else None
    with contextlib.ExitStack() as stack:
        extra: list[L.Callback] = [timer]
        if counter is not None:
            extra = [stack.enter_context(sections(counter, method))]
        trainer = build_trainer(
            cfg,
            callbacks=[*callbacks, *extra],
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        fit = contextlib.nullcontext() if counter is None else counter
        with fit:
            if loader is None:
                trainer.fit(method, datamodule=build_datamodule(cfg))
            else:
                trainer.fit(method, train_dataloaders=loader)
    if counter is not None:
        # the last step's window also holds the end of training: left out
        return counter.summary(list(range(args.warmup, last - 1)))
    result = steady_state(timer.times, args.warmup, last, int(cfg.data.batch_size))
    if cuda:
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def premade_batch(batch: int, classes: int, device: torch.device, seed: int) -> dict[str, Any]:
    """Two normalised random view tensors, labels and indices, already on ``device``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    views = [torch.randn(batch, 3, VIEW_SIZE, VIEW_SIZE, generator=gen) for _ in range(2)]
    return {
        "views": [v.to(device) for v in views],
        "label": torch.randint(classes, (batch,), generator=gen).to(device),
        "sample_id": torch.arange(batch).to(device),
    }


def lightly_reference(cfg: DictConfig, args: argparse.Namespace) -> dict[str, Any]:
    """lightly's NNCLR heads, bank and loss on our backbone, pre-made tensors, plain loop."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import (
        NNCLRPredictionHead,
        NNCLRProjectionHead,
        NNMemoryBankModule,
    )

    cuda = cfg.trainer.accelerator in ("gpu", "cuda")
    device = torch.device("cuda" if cuda else "cpu")
    m = cfg.method
    torch.manual_seed(int(cfg.seed))
    backbone = build_backbone(cfg.backbone, VIEW_SIZE)
    projection = NNCLRProjectionHead(feature_dim(backbone), m.proj_hidden_dim, m.proj_output_dim)
    prediction = NNCLRPredictionHead(m.proj_output_dim, m.pred_hidden_dim, m.proj_output_dim)
    model = torch.nn.ModuleDict(
        {"backbone": backbone, "projection": projection, "prediction": prediction}
    ).to(device)
    channels_last = bool(cfg.trainer.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        for module in model.values():
            module.compile()
    bank = NNMemoryBankModule(size=(int(m.queue_size), int(m.proj_output_dim))).to(device)
    criterion = NTXentLoss(temperature=float(m.temperature))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    batch = premade_batch(int(cfg.data.batch_size), int(cfg.data.num_classes), device, args.seed)
    x1, x2 = batch["views"]
    if channels_last:
        x1, x2 = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x2))
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    )

    def step() -> None:
        with autocast:
            z1 = model["projection"](forward_features(model["backbone"], x1))
            z2 = model["projection"](forward_features(model["backbone"], x2))
            p1, p2 = model["prediction"](z1), model["prediction"](z2)
            nn1 = bank(z1.detach().float(), update=False)
            nn2 = bank(z2.detach().float(), update=True)
            loss = 0.5 * (criterion(nn1, p2.float()) + criterion(nn2, p1.float()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = {}
    last = args.warmup + args.steps
    for i in range(1, last + 1):
        step()
        if i in (args.warmup, last):
            if cuda:
                torch.cuda.synchronize()
            times[i] = time.perf_counter()
    result = steady_state(times, args.warmup, last, int(cfg.data.batch_size))
    if cuda:
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    import lightly

    result["lightly_version"] = lightly.__version__
    result["note"] = (
        "lightly NNCLRProjectionHead/NNCLRPredictionHead/NNMemoryBankModule/NTXentLoss on the "
        "same backbone and pre-made tensors; plain loop with SGD (no LARS, no probe, no "
        "Lightning); compare with 'ceiling'"
    )
    return result


def run_mode(mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Measure one mode (or say why it was skipped)."""
    pipeline = mode if mode in ("cpu", "gpu") else "cpu"
    cfg = compose(args, pipeline, work / mode)
    if mode == "lightly":
        if args.count_ops:
            return {"skipped": "--count-ops counts the project's own training step only"}
        try:
            import lightly  # noqa: F401
        except ImportError:
            return {"skipped": "lightly is not installed (pip install -e '.[bench]')"}
        return lightly_reference(cfg, args)
    if mode == "ceiling":
        device = torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda") else "cpu")
        batch = premade_batch(
            int(cfg.data.batch_size), int(cfg.data.num_classes), device, args.seed
        )
        loader = DataLoader(RepeatBatch(batch), batch_size=None)
        return fit_and_time(cfg, args, loader)
    result = fit_and_time(cfg, args, None)
    result["num_workers"] = int(cfg.data.num_workers)
    return result


def environment(trainer: str) -> dict[str, Any]:
    """Device name, CPU count, library versions and the commit."""
    cuda = trainer == "gpu" and torch.cuda.is_available()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "device": "cuda" if cuda else "cpu",
        "device_name": torch.cuda.get_device_name()
        if cuda
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "commit": commit,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data(), help="npz (full CIFAR-10), cifar10_mini")
    parser.add_argument(
        "--trainer", choices=["gpu", "cpu"], default="gpu" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=10, help="untimed optimiser steps")
    parser.add_argument("--steps", type=int, default=50, help="timed optimiser steps")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--precision", default=None, help="trainer.precision, e.g. bf16-mixed")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--compile", action="store_true", help="trainer.compile=true")
    parser.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--experiment", default="nnclr_cifar10", help="experiment config, e.g. co2_cifar10"
    )
    parser.add_argument(
        "--count-ops",
        action="store_true",
        help="count dispatched ops and host reads per step by section instead of timing",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/results/throughput_<trainer>.json)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every mode")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        parser.error(f"unknown mode(s) {bad}; choose from {', '.join(MODES)}")
    args.out = args.out or REPO / "benchmarks" / "results" / f"throughput_{args.trainer}.json"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        results = {mode: run_mode(mode, args, Path(tmp)) for mode in args.modes}
        cfg = compose(args, "cpu", Path(tmp) / "cfg")
    report = {
        **environment(args.trainer),
        "method": str(cfg.method.name),
        "backbone": str(cfg.backbone.name),
        "data": args.data,
        "batch_size": args.batch_size,
        "views": 2,
        "view_size": VIEW_SIZE,
        "precision": str(cfg.trainer.precision),
        "channels_last": bool(cfg.trainer.channels_last),
        "compile": bool(cfg.trainer.compile),
        "overrides": args.overrides,
        "unit": (
            "dispatched ops and host reads per training step, mean over the steps after "
            "warm-up but the last"
            if args.count_ops
            else "training images per second (two views each), steady state after warm-up"
        ),
        "modes": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
