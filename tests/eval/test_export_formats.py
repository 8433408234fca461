"""Exports in safetensors, their projector, and loading them back through torch.hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nbr_contrast.app.evaluation.export import export_backbone, export_method, export_projector
from nbr_contrast.models.heads import MLPHead
from nbr_contrast.models.rebuild import load_exported

from .test_export import small_stem_resnet18, tiny_vit

REPO = Path(__file__).resolve().parents[2]


def hub(entry: str, weights: Path) -> nn.Module:
    return torch.hub.load(str(REPO), entry, weights=str(weights), source="local")


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def warm_head() -> MLPHead:
    torch.manual_seed(2)
    head = MLPHead(512, [64], 16, last_bn=True)
    with torch.no_grad():
        head(torch.randn(8, 512))  # running statistics away from their initial values
    return head.eval()


class FakeMethod(nn.Module):
    def __init__(self, projector: nn.Module | None) -> None:
        super().__init__()
        self.backbone = small_stem_resnet18()
        self.backbone.arch = "resnet18"
        self.projector = projector


@pytest.mark.parametrize(
    ("build", "arch"), [(small_stem_resnet18, "resnet18"), (tiny_vit, "vit_tiny")]
)
def test_safetensors_and_hub_reproduce_the_features(tmp_path: Path, build, arch: str) -> None:
    backbone = build()
    info = export_backbone(backbone, tmp_path / f"{arch}_backbone.pth", arch)
    tensors = Path(info["safetensors_path"])
    assert tensors == tmp_path / f"{arch}_backbone.safetensors" and tensors.is_file()
    x = torch.randn(3, 3, 32, 32)
    expected = outputs(backbone, x)
    for weights in (tensors, Path(info["path"])):
        for model in (load_exported(weights), hub("backbone", weights)):
            assert not model.training
            assert torch.equal(outputs(model, x), expected)


def test_safetensors_snippet_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = small_stem_resnet18()
    info = export_backbone(backbone, tmp_path / "resnet18_backbone.pth", "resnet18")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(info["load_instructions_safetensors"], namespace)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(outputs(namespace["model"].eval(), x), outputs(backbone, x))


def test_projector_round_trips(tmp_path: Path) -> None:
    head = warm_head()
    info = export_projector(head, tmp_path / "resnet18_projector.pth")
    meta = json.loads(Path(info["metadata_path"]).read_text())
    assert meta["family"] == "projector" and meta["feature_dim"] == 16
    assert meta["projector_args"] == {
        "in_dim": 512,
        "hidden_dims": [64],
        "out_dim": 16,
        "last_bn": True,
        "last_bn_affine": True,
        "hidden_bn": True,
        "last_bias": False,
    }
    x = torch.randn(4, 512)
    for weights in (Path(info["safetensors_path"]), Path(info["path"])):
        model = hub("projector", weights)
        assert not model.training
        assert torch.equal(outputs(model, x), outputs(head, x))


def test_export_method_writes_backbone_and_projector_files(tmp_path: Path) -> None:
    result = export_method(FakeMethod(warm_head()), tmp_path, projector=True)
    names = sorted(Path(file).name for file in result["files"])
    assert names == sorted(
        f"resnet18_{part}.{ext}"
        for part in ("backbone", "projector")
        for ext in ("pth", "safetensors", "json")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert "projector" not in export_method(FakeMethod(warm_head()), tmp_path / "b")


def test_projector_request_without_a_projector_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"task\.projector=true but FakeMethod has no MLPHead"):
        export_method(FakeMethod(None), tmp_path / "out", projector=True)
    assert not (tmp_path / "out").exists()


def test_loading_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    info = export_backbone(small_stem_resnet18(), tmp_path / "resnet18_backbone.pth", "resnet18")
    head = export_projector(warm_head(), tmp_path / "resnet18_projector.pth")
    with pytest.raises(FileNotFoundError, match=r"weights=.*missing\.safetensors does not exist"):
        hub("backbone", tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match=r"is not a \.safetensors, \.pth, \.pt file"):
        load_exported(info["metadata_path"])
    with pytest.raises(ValueError, match=r"holds a projector; load it with the 'projector'"):
        load_exported(head["safetensors_path"])
    with pytest.raises(ValueError, match=r"holds a backbone; load it with the 'backbone'"):
        load_exported(info["safetensors_path"], kind="projector")

    alone = tmp_path / "alone"
    alone.mkdir()
    orphan = alone / "resnet18_backbone.safetensors"
    orphan.write_bytes(Path(info["safetensors_path"]).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"no recipe resnet18_backbone\.json beside it"):
        load_exported(orphan)

    (alone / "resnet18_backbone.json").write_text(Path(info["metadata_path"]).read_text())
    orphan.write_text("not tensors")
    with pytest.raises(ValueError, match=r"is not a state-dict file \(SafetensorError"):
        load_exported(orphan)

    swapped = tmp_path / "swapped.safetensors"
    swapped.write_bytes(Path(info["safetensors_path"]).read_bytes())
    vit = export_backbone(tiny_vit(), tmp_path / "vit.pth", "vit_tiny")
    (tmp_path / "swapped.json").write_text(Path(vit["metadata_path"]).read_text())
    with pytest.raises(ValueError, match=r"does not fit the vit model of swapped\.json: missing"):
        load_exported(swapped)


def test_hub_in_a_fresh_interpreter_uses_this_clone(tmp_path: Path) -> None:
    backbone = small_stem_resnet18()
    info = export_backbone(backbone, tmp_path / "resnet18_backbone.pth", "resnet18")
    x = torch.randn(2, 3, 32, 32)
    torch.save({"x": x, "expected": outputs(backbone, x)}, tmp_path / "io.pt")
    script = (
        "import sys, torch\n"
        f"model = torch.hub.load({str(REPO)!r}, 'backbone', "
        f"weights={info['safetensors_path']!r}, source='local')\n"
        "import nbr_contrast\n"
        f"assert nbr_contrast.__file__.startswith({str(REPO / 'src')!r}), nbr_contrast.__file__\n"
        f"io = torch.load({str(tmp_path / 'io.pt')!r})\n"
        "with torch.no_grad():\n"
        "    assert torch.equal(model(io['x']), io['expected'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
