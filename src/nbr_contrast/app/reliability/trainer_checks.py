"""The ``trainer`` group's settings, checked before Lightning sees them.

Lightning refuses most bad values itself, but deep in ``Trainer.__init__`` with its own
exception types (``MisconfigurationException``, ``TypeError``) and without the setting's
name; here each is one line naming ``trainer.<field>`` and the fix.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig, ListConfig

from nbr_contrast.app.reliability.errors import fail

PRECISIONS = (
    "auto",
    "32-true",
    "32",
    "16-mixed",
    "16",
    "bf16-mixed",
    "bf16",
    "16-true",
    "bf16-true",
    "64-true",
    "64",
    "transformer-engine",
    "transformer-engine-float16",
)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
AT_LEAST_1 = (
    "num_nodes",
    "log_every_n_steps",
    "accumulate_grad_batches",
    "check_val_every_n_epoch",
    "progress_bar_refresh_rate",
)
AT_LEAST_0 = ("checkpoint_every_n_steps", "finite_check_every_n_steps", "progress_every_n_logs")


def check_trainer(t: DictConfig, gpus: int) -> None:
    """Check every ``trainer.*`` setting (``gpus``: GPUs visible to this process).

    Raises:
        ConfigError: For the first setting that cannot work.
    """
    _check_hardware(t, gpus)
    if str(t.precision) not in PRECISIONS:
        fail(f"trainer.precision={t.precision!r} is invalid; valid: {', '.join(PRECISIONS)}.")
    if str(t.compile_mode) not in COMPILE_MODES:
        fail(
            f"trainer.compile_mode={t.compile_mode!r} is unknown; "
            f"valid: {', '.join(COMPILE_MODES)}."
        )
    for name in AT_LEAST_1:
        if int(t[name]) < 1:
            fail(f"trainer.{name}={t[name]} must be at least 1; change trainer.{name}.")
    for name in AT_LEAST_0:
        if int(t[name]) < 0:
            fail(f"trainer.{name}={t[name]} must be >= 0; change trainer.{name}.")
    _check_length(t)
    for name in ("limit_train_batches", "limit_val_batches"):
        _check_limit(name, t[name])
    if t.gradient_clip_val is not None and float(t.gradient_clip_val) < 0:
        fail(f"trainer.gradient_clip_val={t.gradient_clip_val} must be >= 0 (or null for none).")


def _check_hardware(t: DictConfig, gpus: int) -> None:
    """The accelerator, the strategy and the devices: known, well formed and present."""
    accelerator = str(t.accelerator)
    if accelerator not in ACCELERATORS:
        fail(f"trainer.accelerator={accelerator!r} is unknown; valid: {', '.join(ACCELERATORS)}.")
    missing = {
        "gpu": gpus == 0 and not torch.backends.mps.is_available(),
        "cuda": gpus == 0,
        "mps": not torch.backends.mps.is_available(),
        "tpu": importlib.util.find_spec("torch_xla") is None,
    }
    if missing.get(accelerator, False):
        fail(
            f"trainer.accelerator={accelerator} is not available on this machine; use "
            "trainer.accelerator=auto (or cpu)."
        )
    strategies = ("auto", *StrategyRegistry.available_strategies())
    if str(t.strategy) not in strategies:
        shown = ", ".join(s for s in strategies if "find_unused" not in s)
        fail(f"trainer.strategy={t.strategy!r} is unknown; valid: {shown}.")
    if str(t.devices).strip() not in ("auto", "-1") and requested_devices(t.devices) is None:
        fail(
            f"trainer.devices={t.devices!r} is not a device count; use a positive number, "
            "auto, -1 (all), or a list of device ids such as [0,1]."
        )
    validate_devices(t, gpus)


def device_ids(devices: Any) -> list[int] | None:
    """The device ids a list (``[0,1]``, ``"0,1"``) names, else ``None``."""
    if isinstance(devices, list | ListConfig):
        items = [str(d) for d in devices]
    elif isinstance(devices, str) and "," in devices:
        items = [p.strip() for p in devices.strip("[]").split(",") if p.strip()]
    else:
        return None
    if not items or not all(i.isdigit() for i in items):
        return None
    return [int(i) for i in items]


def requested_devices(devices: object) -> int | None:
    """How many devices ``trainer.devices`` asks for (``None`` for ``auto``, ``-1`` or junk)."""
    ids = device_ids(devices)
    if ids is not None:
        return len(ids)
    text = str(devices).strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return None


def validate_devices(trainer: DictConfig, gpus: int) -> None:
    """Refuse a device count the machine cannot give, instead of changing its meaning.

    ``trainer.devices=8`` on a machine without 8 GPUs would otherwise start 8 CPU
    processes (``accelerator=auto``) or fail deep inside Lightning (``accelerator=gpu``).
    An explicit ``trainer.accelerator=cpu`` (``trainer=ddp_cpu``) keeps CPU processes.

    Args:
        trainer: The ``trainer`` config.
        gpus: GPUs visible to this process.

    Raises:
        ConfigError: Naming what was asked, what is present and the fix.
    """
    wanted = requested_devices(trainer.devices)
    accelerator = str(trainer.accelerator)
    if wanted is None or accelerator == "cpu" or wanted <= max(gpus, 1):
        return
    if gpus == 0:
        fail(
            f"trainer.devices={wanted} asks for {wanted} GPUs but no GPU is present, so it "
            f"would start {wanted} CPU processes: use trainer.devices=1 to train on the CPU, "
            f"or trainer=ddp_cpu trainer.devices={wanted} for distributed CPU processes (gloo)."
        )
    if accelerator in ("auto", "gpu", "cuda") and wanted > gpus:
        fail(
            f"trainer.devices={wanted} asks for {wanted} GPUs but {gpus} are visible; set "
            f"trainer.devices={gpus} (the learning rate follows the global batch)."
        )


def _check_length(t: DictConfig) -> None:
    """``max_epochs`` and ``max_steps``: each at least 1 or -1 (no limit), not both -1."""
    if int(t.max_steps) == 0 or int(t.max_steps) < -1:
        fail(f"trainer.max_steps={t.max_steps} must be at least 1, or -1 for no step limit.")
    if int(t.max_epochs) == -1 and int(t.max_steps) == -1:
        fail(
            "trainer.max_epochs=-1 (no epoch limit) needs a step limit; set trainer.max_steps "
            "or trainer.max_epochs to at least 1."
        )
    if int(t.max_epochs) == 0 or int(t.max_epochs) < -1:
        fail(
            f"trainer.max_epochs={t.max_epochs} must be at least 1 (or -1 for no epoch limit, "
            "with trainer.max_steps set)."
        )


def _check_limit(name: str, value: Any) -> None:
    """``limit_*_batches``: a fraction in [0, 1] or a batch count (training: not 0)."""
    fraction = isinstance(value, float) and 0 <= value <= 1
    count = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if not (fraction or count):
        fail(
            f"trainer.{name}={value!r} must be a fraction in [0, 1] or a number of batches; "
            f"change trainer.{name}."
        )
    if name == "limit_train_batches" and value == 0:
        fail(
            "trainer.limit_train_batches=0 trains on no batch; give a fraction in (0, 1] or a "
            "number of batches."
        )
