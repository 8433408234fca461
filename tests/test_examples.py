"""docs/examples/plain_pytorch.py: NNCLR in a plain PyTorch loop trains, without Lightning."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import torch

from .runs import run_python

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "plain_pytorch.py"
TINY = ["--batch-size", "32", "--image-size", "16"]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plain_pytorch", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_example_trains_with_the_bank() -> None:
    example = load_example()
    untrained, _, _ = example.main(["--steps", "0", *TINY])  # same seed: the initial weights
    model, bank, losses = example.main(["--steps", "3", *TINY])
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert (bank.num_seen, bank.num_valid, bank.ptr) == (96, 96, 96)
    stored = bank.payloads["label"]
    assert ((stored[:96] >= 0) & (stored[:96] < 10)).all()  # the batches' CIFAR-10 labels
    assert (stored[96:] == -1).all()  # the rest is still the initial fill
    torch.testing.assert_close(bank.embeddings[:96].norm(dim=1), torch.ones(96))
    before = dict(untrained.named_parameters())
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []


def test_plain_example_runs_as_a_script_without_lightning_or_hydra() -> None:
    script = (
        "import runpy, sys; "
        f"sys.argv = ['plain_pytorch.py', '--steps', '1', *{TINY!r}]; "
        f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__'); "
        "print(sorted({'lightning', 'pytorch_lightning', 'hydra'} & set(sys.modules)))"
    )
    lines = run_python(["-c", script], timeout=300).stdout.splitlines()
    assert lines[0].startswith("step 1/1  loss ")
    assert lines[-1] == "[]"
