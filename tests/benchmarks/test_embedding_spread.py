from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "embedding_spread.py"


def load():
    spec = importlib.util.spec_from_file_location("embedding_spread", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["embedding_spread"] = module
    spec.loader.exec_module(module)
    return module


def test_mean_pairwise_cosine_leaves_out_each_row_with_itself() -> None:
    cosine = load().mean_off_diagonal_cosine
    assert abs(cosine(torch.eye(4))) < 1e-7
    assert abs(cosine(torch.ones(3, 5) * 2.0) - 1.0) < 1e-6
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    pairs = [0.5**0.5, 0.0, 0.5**0.5]
    assert abs(cosine(x) - sum(pairs) / 3) < 1e-6


def test_a_head_without_batch_norm_embeds_closer_than_one_with(tmp_path: Path) -> None:
    module = load()
    tiny = ["data.image_size=16", "backbone.name=resnet18", "method.queue_size=64"]
    heads = ["method.proj_hidden_dim=64", "method.proj_output_dim=32"]
    plain = module.spread(["method=mocov2", *tiny, *heads], 64, 0, tmp_path / "a")
    with_bn = module.spread(
        ["method=mocov2", "method.proj_hidden_bn=true", *tiny, *heads], 64, 0, tmp_path / "b"
    )
    assert plain["features"] == with_bn["features"]
    assert plain["keys"] > with_bn["keys"] + 0.1
