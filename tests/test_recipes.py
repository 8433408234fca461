"""Each method's recipe as ``method=X`` composes it, and its baseline differing only in the switch.

The expected values are copied from the sources each config file cites (solo-learn's CIFAR
configs and augmentation files, the official CoNe and MSF scripts, MoCo v2's and BYOL's
papers), so
a config edit that drifts from its source fails here.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from nbr_contrast import api
from nbr_contrast.app.method_schemas import FROM_OTHER_GROUPS, METHODS, constructor_parameters
from nbr_contrast.data.recipes import view_recipe

from .runs import TINY, run_cli

# solo-learn scripts/pretrain/cifar/augmentations: asymmetric.yaml (small images) and BYOL's
# Table 6 (large images); symmetric_weak.yaml / MoCo v2 --aug-plus; the supervised recipes.
BYOL = {"jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
MOCOV2 = {"jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
VIEWS: dict[str, dict[bool, list[dict[str, Any]]]] = {
    "byol": {
        True: [
            {**BYOL, "crop_scale": [0.08, 1.0], "blur_p": 0.0, "solarize_p": 0.0},
            {**BYOL, "crop_scale": [0.08, 1.0], "blur_p": 0.0, "solarize_p": 0.2},
        ],
        False: [
            {**BYOL, "crop_scale": [0.08, 1.0], "blur_p": 1.0, "solarize_p": 0.0},
            {**BYOL, "crop_scale": [0.08, 1.0], "blur_p": 0.1, "solarize_p": 0.2},
        ],
    },
    "mocov2": {
        small: [{**MOCOV2, "crop_scale": [scale, 1.0], "blur_p": 0.5, "solarize_p": 0.0}] * 2
        for small, scale in ((True, 0.08), (False, 0.2))
    },
    # MSF train_msf.py --weak_strong: MoCo v2's augmentation on the query, crop + flip on
    # the target, crop scale (0.2, 1) at every size
    "msf": {
        small: [
            {**MOCOV2, "crop_scale": [0.2, 1.0], "blur_p": 0.5, "solarize_p": 0.0},
            {
                "crop_scale": [0.2, 1.0],
                "flip_p": 0.5,
                "jitter_p": 0.0,
                "grayscale_p": 0.0,
                "blur_p": 0.0,
                "solarize_p": 0.0,
            },
        ]
        for small in (True, False)
    },
    "supervised": {
        True: [{"crop": "pad", "pad": 4, "flip_p": 0.5, "jitter_p": 0.0, "grayscale_p": 0.0}],
        False: [{"crop": "rrc", "crop_scale": [0.08, 1.0], "flip_p": 0.5, "jitter_p": 0.0}],
    },
}
LARS = {"name": "lars", "momentum": 0.9, "eta": 0.02, "clip_lr": True}
OPTIM: dict[str, dict[str, Any]] = {
    # solo-learn cifar/nnclr.yaml, cifar/mocov3.yaml, cifar/mocov2plus.yaml; CoNe cone_train.py
    "nnclr": {**LARS, "lr": 0.4, "weight_decay": 1e-5, "exclude_bias_and_norm": True},
    "mocov3": {**LARS, "lr": 0.3, "weight_decay": 1e-6, "exclude_bias_and_norm": True},
    "mocov2": {"name": "sgd", "lr": 0.3, "weight_decay": 1e-4, "exclude_bias_and_norm": False},
    "cone": {
        "name": "sgd",
        "lr": 0.1,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "exclude_bias_and_norm": False,
        "warmup_epochs": 5,
        "min_lr_ratio": 0.001,
        "cosine_interval": "epoch",
    },
    # MSF train_msf.py and util.adjust_learning_rate (--cos: per epoch, to 0, no warm-up)
    "msf": {
        "name": "sgd",
        "lr": 0.05,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "exclude_bias_and_norm": False,
        "warmup_epochs": 0,
        "min_lr_ratio": 0.0,
        "cosine_interval": "epoch",
    },
}
SOLO_SCHEDULE = {"warmup_epochs": 10, "min_lr_ratio": 0.0, "cosine_interval": "step"}
for _name in ("nnclr", "mocov3", "mocov2"):
    OPTIM[_name].update(SOLO_SCHEDULE)
MOCOV2_METHOD = {
    "proj_hidden_dim": 2048,
    "proj_output_dim": 256,
    "temperature": 0.2,
    "momentum": 0.99,
    "final_momentum": 0.999,
    "copy_ema_buffers": False,
}
MOCOV3_METHOD = {
    "proj_hidden_dim": 4096,
    "proj_output_dim": 256,
    "pred_hidden_dim": 4096,
    "temperature": 0.2,
    "momentum": 0.99,
    "final_momentum": 1.0,
    "copy_ema_buffers": False,
}
MSF_METHOD = {
    "proj_hidden_dim": None,
    "proj_output_dim": None,
    "queue_size": 16384,
    "momentum": 0.99,
    "final_momentum": 0.99,
    "copy_ema_buffers": False,
}
RECIPES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "nnclr": (
        "byol",
        "nnclr",
        {
            "proj_hidden_dim": 2048,
            "proj_output_dim": 256,
            "pred_hidden_dim": 4096,
            "temperature": 0.2,
            "queue_size": 65536,
            "use_nn": True,
        },
    ),
    "co2": ("mocov2", "mocov2", MOCOV2_METHOD),
    "mocov2": ("mocov2", "mocov2", {**MOCOV2_METHOD, "alpha": 0.0}),
    "clim": ("mocov2", "mocov2", MOCOV2_METHOD),
    "snclr": ("byol", "mocov3", MOCOV3_METHOD),
    "mocov3": ("byol", "mocov3", {**MOCOV3_METHOD, "k": 0}),
    "cone": (
        "supervised",
        "cone",
        {
            "k": 512,
            "sup_temperature": 0.1,
            "dc_temperature": 0.07,
            "sup_weight": 0.7,
            "dc_weight": 0.4,
            "momentum": 0.996,
            "final_momentum": 1.0,
            "copy_ema_buffers": False,
        },
    ),
    "supervised": ("supervised", "cone", {"sup_weight": 0.0, "dc_weight": 0.0}),
    # MSF train_msf.py: --topk 5, --momentum 0.99 constant, heads from the backbone's width;
    # the bank 16,384 on small images (ours; official --mem_bank_size 128000)
    "msf": ("msf", "msf", {**MSF_METHOD, "k": 5}),
    "byol": ("msf", "msf", {**MSF_METHOD, "k": 1}),
}


def compose(tmp_path: Path, *overrides: str) -> Any:
    return api.compose(list(overrides), output_dir=tmp_path)


def assert_fields(node: Any, expected: dict[str, Any], where: str) -> None:
    for key, value in expected.items():
        got = node[key]
        if OmegaConf.is_config(got):
            got = OmegaConf.to_container(got, resolve=True)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (
            f"{where}.{key}: {got!r} != {value!r}"
        )


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_bare_method_composes_its_recipe(method: str, tmp_path: Path) -> None:
    views, optim, values = RECIPES[method]
    cfg = compose(tmp_path, f"method={method}")
    assert_fields(cfg.method, values, "method")
    assert_fields(cfg.optim, OPTIM[optim], "optim")
    expected = VIEWS[views][True]
    assert len(cfg.data.views) == len(expected) + (1 if method == "clim" else 0)
    for i, view in enumerate(expected):
        assert_fields(cfg.data.views[i], {"size": 32, **view}, f"data.views[{i}]")


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_another_dataset_keeps_the_methods_views_at_its_size(method: str, tmp_path: Path) -> None:
    views = RECIPES[method][0]
    cfg = compose(tmp_path, f"method={method}", "data=stl10")
    for i, view in enumerate(VIEWS[views][False]):
        assert_fields(cfg.data.views[i], {"size": 96, **view}, f"data.views[{i}]")
    cfg = compose(tmp_path, f"method={method}", "data=cifar100")
    assert all(v.size == 32 for v in cfg.data.views[: len(VIEWS[views][True])])


def test_explicit_groups_and_values_still_win(tmp_path: Path) -> None:
    cfg = compose(tmp_path, "method=cone", "optim=lars", "views=byol", "optim.lr=0.05")
    assert cfg.optim.name == "lars" and cfg.optim.lr == 0.05
    assert [v.solarize_p for v in cfg.data.views] == [0.0, 0.2]
    cfg = compose(tmp_path, "method=nnclr", "data.views=[{size:16}]")
    assert len(cfg.data.views) == 1 and cfg.data.views[0].size == 16


def flat(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def differing(a: Any, b: Any) -> set[str]:
    fa, fb = flat(a), flat(b)
    return {k for k in fa.keys() | fb.keys() if fa.get(k, "<absent>") != fb.get(k, "<absent>")}


# a baseline class is its method's class that fixes the switch: the switch, its name and
# its class (``_target_``) may differ, nothing else
NAMED = {"method.name", "method._target_"}
PAIRS = [
    # (overrides of the method run, the baseline's extra overrides, keys allowed to differ)
    (["method=nnclr"], ["method.use_nn=false"], {"method.use_nn"}),
    (["experiment=nnclr_cifar10"], ["method.use_nn=false"], {"method.use_nn"}),
    (["method=co2"], ["method=mocov2"], {*NAMED, "method.alpha"}),
    (["experiment=co2_cifar10"], ["method=mocov2"], {*NAMED, "method.alpha"}),
    (["method=snclr"], ["method=mocov3"], {*NAMED, "method.k"}),
    (["experiment=snclr_cifar10"], ["method=mocov3"], {*NAMED, "method.k"}),
    (["method=cone"], ["method=supervised"], {*NAMED, "method.sup_weight", "method.dc_weight"}),
    (
        ["experiment=cone_cifar10"],
        ["method=supervised"],
        {*NAMED, "method.sup_weight", "method.dc_weight"},
    ),
    (["method=msf"], ["method=byol"], {*NAMED, "method.k"}),
    (["experiment=msf_cifar10"], ["method=byol"], {*NAMED, "method.k"}),
]


@pytest.mark.parametrize(("method", "baseline", "allowed"), PAIRS)
def test_baseline_differs_only_in_the_neighbour_switch(
    method: list[str], baseline: list[str], allowed: set[str], tmp_path: Path
) -> None:
    a = compose(tmp_path, *method)
    b = compose(tmp_path, *method, *baseline)
    assert differing(a, b) == allowed


def test_clim_differs_from_mocov2_in_its_own_parts_only(tmp_path: Path) -> None:
    for clim, mocov2 in (
        (["method=clim"], ["method=mocov2"]),
        (["experiment=clim_cifar10"], ["experiment=co2_cifar10", "method=mocov2"]),
    ):
        a, b = compose(tmp_path, *clim), compose(tmp_path, *mocov2)
        own = {"_target_", "name", "n_clusters", "k", "refresh_every", "warmup_epochs"}
        own |= {"mixer", "mix_alpha"}
        diff = differing(a, b)
        # CLIM's own keys, and its extra multi-resolution view (a list, compared whole)
        assert diff - {f"method.{k}" for k in own} == {"data.views"}
        assert a.data.views[:2] == b.data.views
        assert a.data.views[2].size == 24


def test_more_devices_than_gpus_is_one_line_not_cpu_processes(tmp_path: Path) -> None:
    # no GPU, whatever the machine has
    proc = run_cli(["method=cone", "trainer.devices=8"], tmp_path, {"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Error: trainer.devices=8 asks for 8 GPUs but no GPU is present, so it would start 8 "
        "CPU processes: use trainer.devices=1 to train on the CPU, or trainer=ddp_cpu "
        "trainer.devices=8 for distributed CPU processes (gloo)."
    ]
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.ckpt"))


def test_validate_devices_rules() -> None:
    from nbr_contrast.app.reliability import ConfigError
    from nbr_contrast.app.reliability.trainer_checks import validate_devices

    def trainer(devices: object, accelerator: str = "auto") -> Any:
        return OmegaConf.create({"devices": devices, "accelerator": accelerator})

    validate_devices(trainer(1), gpus=0)
    validate_devices(trainer("auto"), gpus=0)
    validate_devices(trainer(2, "cpu"), gpus=0)  # trainer=ddp_cpu
    validate_devices(trainer(4, "gpu"), gpus=4)
    validate_devices(trainer("0,1"), gpus=2)
    with pytest.raises(ConfigError, match=r"trainer\.devices=4 asks for 4 GPUs but 2 are visible"):
        validate_devices(trainer(4, "gpu"), gpus=2)
    with pytest.raises(ConfigError, match="no GPU is present"):
        validate_devices(trainer("[0, 1]"), gpus=0)


def test_bare_cone_trains_with_supervised_views_and_sgd(tmp_path: Path) -> None:
    small = ["method.k=8", "method.proj_hidden_dim=64", "knn_report=false"]
    cfg = api.compose(["method=cone", "trainer.devices=1", *TINY, *small], tmp_path)
    assert [v.crop for v in cfg.data.views] == ["pad"] and cfg.data.views[0].jitter_p == 0.0
    assert cfg.optim.name == "sgd"
    summary = api.fit(cfg)
    assert summary["steps"] == 2 and summary["method"] == "cone"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_constructors_defaults_are_the_recipe(name: str, tmp_path: Path) -> None:
    """``NNCLR()`` is what ``method=nnclr`` composes: arguments, optimiser and views."""
    cls = METHODS[name]
    cfg = compose(tmp_path, f"method={name}")
    composed = OmegaConf.to_container(cfg.method, resolve=True)
    defaults = {k: default for k, (_, default) in constructor_parameters(cls).items()}
    own = {k: v for k, v in composed.items() if k not in ("_target_", "name")}
    assert own == {k: defaults[k] for k in own}
    assert set(defaults) - set(own) == set(FROM_OTHER_GROUPS)
    assert OmegaConf.to_container(cfg.optim, resolve=True) == asdict(cls.optim_recipe)
    views = OmegaConf.to_container(cfg.data.views, resolve=True)
    assert views == [asdict(v) for v in view_recipe(cls.view_recipe, int(cfg.data.image_size))]
