"""Dispatched torch ops per training step, split by what issued them.

On a GPU each dispatched op is roughly one kernel launch and costs the host some
microseconds, so a step that dispatches thousands of small ops is bound by the host, not
the device. :class:`OpCounter` (a ``TorchDispatchMode``) counts every op that reaches the
backend, and host reads (``aten::_local_scalar_dense``, what ``.item()``, ``int()``,
``float()`` and ``bool()`` of a tensor become; on a GPU each one waits for the device),
under the section active when the op ran. :func:`sections` attributes ops to sections by
Lightning hooks, module hooks and wrappers around the project's entry points:

* ``backbone forward``: inside the forward of a child module whose name has "backbone";
* ``backward``: from ``on_before_backward`` to ``on_after_backward``;
* ``heads+loss``: the rest of the training step (heads, losses, probe);
* ``search/bank``: ``NeighbourBank.search``/``enqueue``/``similarities`` and the
  neighbour-index callback;
* ``optimiser``: after ``on_after_backward`` to the end of the optimiser step, and the EMA
  update of momentum encoders;
* ``logging``: ``LightningModule.log``/``log_dict`` and Lightning's bookkeeping after the step;
* ``views``: ``GpuViews.forward`` (the GPU view pipeline);
* ``loader``: the data loader's ``__next__`` and the batch transfer after it.

Works on any version of the package that has these entry points, so the same counter
measures the code before and after a change.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data.dataloader import _BaseDataLoaderIter

SECTIONS = (
    "backbone forward",
    "backward",
    "heads+loss",
    "search/bank",
    "optimiser",
    "logging",
    "views",
    "loader",
)
READ = torch.ops.aten._local_scalar_dense.default


class OpCounter(TorchDispatchMode):
    """Counts dispatched ops and host reads per section, per training step."""

    def __init__(self) -> None:
        super().__init__()
        self.base = "loader"
        self.stack: list[str] = []
        self.step = -1
        self.ops: dict[int, Counter[str]] = {}
        self.reads: dict[int, Counter[str]] = {}
        self.logging_steps: set[int] = set()

    @property
    def section(self) -> str:
        """The section ops are counted under now."""
        return self.stack[-1] if self.stack else self.base

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if self.step >= 0:
            self.ops.setdefault(self.step, Counter())[self.section] += 1
            if func is READ:
                self.reads.setdefault(self.step, Counter())[self.section] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def entered(self, section: str) -> Iterator[None]:
        """Count the block under ``section``."""
        self.stack.append(section)
        try:
            yield
        finally:
            self.stack.pop()

    def wrap(self, section: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its ops counted under ``section``."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.entered(section):
                return fn(*args, **kwargs)

        return wrapper

    def summary(self, steps: list[int]) -> dict[str, Any]:
        """Mean ops and host reads per step over ``steps``, by section and in total.

        Logging steps (which read metrics back on purpose) are left out and listed.
        """
        left_out = sorted(self.logging_steps & set(steps))
        steps = [i for i in steps if i not in self.logging_steps]
        n = max(1, len(steps))
        ops = {s: sum(self.ops.get(i, Counter())[s] for i in steps) / n for s in SECTIONS}
        reads = {s: sum(self.reads.get(i, Counter())[s] for i in steps) / n for s in SECTIONS}
        return {
            "steps": len(steps),
            "logging_steps_left_out": left_out,
            "ops_per_step": {**ops, "total": sum(ops.values())},
            "host_reads_per_step": {**reads, "total": sum(reads.values())},
        }


class SectionHooks(L.Callback):
    """Switches the counter's base section at step, backward and optimiser boundaries.

    Add it last, so its ``on_train_batch_end`` runs after every other callback's.
    """

    def __init__(self, counter: OpCounter) -> None:
        self.counter = counter

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.counter.step = trainer.global_step
        self.counter.base = "heads+loss"
        if trainer._logger_connector.should_update_logs:
            self.counter.logging_steps.add(trainer.global_step)

    def on_before_backward(self, *args: Any) -> None:
        self.counter.base = "backward"

    def on_after_backward(self, *args: Any) -> None:
        self.counter.base = "optimiser"

    def on_train_batch_end(self, *args: Any) -> None:
        self.counter.base = "logging"


def _module_hooks(counter: OpCounter, module: torch.nn.Module, section: str) -> list[Any]:
    def enter(*_: Any) -> None:
        counter.stack.append(section)

    def leave(*_: Any) -> None:
        counter.stack.pop()

    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]


@contextlib.contextmanager
def sections(counter: OpCounter, method: torch.nn.Module) -> Iterator[SectionHooks]:
    """Attribute ``method``'s training ops to :data:`SECTIONS` while the block runs.

    Yields:
        The callback to add (last) to the trainer's callbacks.
    """
    from nbr_contrast.data.gpu_views import GpuViews
    from nbr_contrast.methods import momentum
    from nbr_contrast.neighbours.bank import NeighbourBank
    from nbr_contrast.neighbours.callback import NeighbourIndexCallback

    patches = [
        (NeighbourBank, "search", "search/bank"),
        (NeighbourBank, "enqueue", "search/bank"),
        (NeighbourBank, "similarities", "search/bank"),
        (NeighbourIndexCallback, "on_train_batch_end", "search/bank"),
        (L.LightningModule, "log", "logging"),
        (L.LightningModule, "log_dict", "logging"),
        (GpuViews, "forward", "views"),
        (_BaseDataLoaderIter, "__next__", "loader"),
        (momentum, "ema_update", "optimiser"),
    ]
    handles = []
    for name, child in method.named_children():
        if "backbone" in name:
            handles += _module_hooks(counter, child, "backbone forward")
    with contextlib.ExitStack() as stack:
        for owner, attr, section in patches:
            original = getattr(owner, attr)
            stack.enter_context(
                _patched(owner, attr, counter.wrap(section, original)),
            )
        try:
            yield SectionHooks(counter)
        finally:
            for handle in handles:
                handle.remove()


@contextlib.contextmanager
def _patched(owner: Any, attr: str, value: Any) -> Iterator[None]:
    original = owner.__dict__[attr] if attr in getattr(owner, "__dict__", {}) else None
    setattr(owner, attr, value)
    try:
        yield
    finally:
        if original is None:
            delattr(owner, attr)
        else:
            setattr(owner, attr, original)
