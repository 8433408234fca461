from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from nbr_contrast import api
from nbr_contrast.app.method_schemas import METHODS
from nbr_contrast.app.overrides import OverrideError, check_overrides

from .runs import run_cli

GROUPS = ["method", "backbone", "data", "trainer", "optim", "search", "logger", "task"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (api.CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group: str, option: str, tmp_path: Path) -> None:
    overrides = [f"{group}={option}"]
    if option in ("npz",):
        overrides += ["data.train_path=a.npz", "data.test_path=b.npz"]
    if option.startswith("imagefolder"):
        overrides += ["data.root=/data/imagenet"]
    cfg = api.compose(overrides, output_dir=tmp_path)
    node = cfg[group]
    if group in ("method", "task") or (group == "backbone" and node.source == "torchvision"):
        assert node.name == option
    if group == "backbone" and node.source != "torchvision":
        assert node.source == option  # backbone=timm / custom: name is the model's own
    if group == "data":
        assert option.startswith(node.name)
    if group == "search":
        assert node.backend == option
    assert cfg.output_dir == str(tmp_path)


def test_every_method_config_file_matches_a_schema() -> None:
    assert set(options("method")) == set(METHODS)


def test_experiment_files_compose(tmp_path: Path) -> None:
    for name in options("experiment"):
        cfg = api.compose([f"experiment={name}"], output_dir=tmp_path)
        assert cfg.method.name in METHODS


def test_unknown_method_lists_valid_choices(tmp_path: Path) -> None:
    with pytest.raises(OverrideError) as err:
        api.compose(["method=nnclrr"], output_dir=tmp_path)
    message = str(err.value)
    assert "Did you mean 'nnclr'" in message
    for valid in ("co2", "snclr", "clim", "cone"):
        assert valid in message


def test_unknown_backbone_lists_valid_choices(tmp_path: Path) -> None:
    with pytest.raises(OverrideError) as err:
        api.compose(["backbone=resnet19"], output_dir=tmp_path)
    for valid in ("resnet18", "resnet50", "vit_small"):
        assert valid in str(err.value)


def test_misspelt_key_names_the_closest_valid_key() -> None:
    with pytest.raises(OverrideError) as err:
        check_overrides(["method=nnclr", "method.temprature=0.2"])
    message = str(err.value)
    assert "method.temprature" in message
    assert "Did you mean 'temperature'" in message
    assert "queue_size" in message


def test_unknown_top_level_key() -> None:
    with pytest.raises(OverrideError, match="Valid keys in the run config"):
        check_overrides(["sed=3"])


def test_wrong_type_fails_before_composition(tmp_path: Path) -> None:
    with pytest.raises(OverrideError, match=r"trainer\.max_epochs=many is not an integer; write"):
        api.compose(["trainer.max_epochs=many"], output_dir=tmp_path)


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "task.k=[abc]",
            "task.k[0]=abc is not an integer; fix it in task.k=[...], e.g. task.k=[20,200].",
        ),
        (
            "data.views=[{size:16},{size:abc}]",
            "data.views[1].size=abc is not an integer; fix it in data.views=[...].",
        ),
        (
            "trainer.compile=maybe",
            "trainer.compile=maybe is not true or false; write trainer.compile=true or "
            "trainer.compile=false.",
        ),
        ("seed=1,x", "seed=x is not an integer; write seed=<integer>, e.g. seed=3."),
    ],
)
def test_a_value_of_the_wrong_type_is_named_with_its_fix(override: str, line: str) -> None:
    """A list's item is named by its index and fixed in the list; a sweep's values one by one."""
    with pytest.raises(OverrideError) as err:
        check_overrides([override])
    assert str(err.value) == line


def test_the_schema_refuses_a_wrong_type_even_without_the_precheck(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    with (
        initialize_config_dir(str(api.CONF_DIR), version_base="1.3"),
        pytest.raises((ConfigCompositionException, ValidationError)) as err,
    ):
        compose("config", ["trainer.max_epochs=many"])
    assert "max_epochs" in str(err.value)


def test_schema_rejects_unknown_key_even_without_the_precheck(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    with (
        initialize_config_dir(config_dir=str(api.CONF_DIR), version_base="1.3"),
        pytest.raises(ConfigCompositionException, match=r"method\.temprature"),
    ):
        compose("config", overrides=["method.temprature=0.2"])


def test_method_keys_are_checked_against_the_experiments_method() -> None:
    check_overrides(["experiment=cone_cifar10", "method.dc_weight=0"])
    with pytest.raises(OverrideError, match="Did you mean 'dc_weight'"):
        check_overrides(["experiment=cone_cifar10", "method.dc_wieght=0"])


def test_method_keys_of_a_sweep_are_checked_against_every_method() -> None:
    check_overrides(["-m", "method=nnclr,co2", "method.alpha=0.5", "method.use_nn=false"])
    with pytest.raises(OverrideError, match=r"method\.alhpa"):
        check_overrides(["-m", "method=nnclr,co2", "method.alhpa=0.5"])


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from nbr_contrast.app.build import resolve_precision

    assert resolve_precision("16-mixed", "cpu") == "16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", "gpu") == "16-mixed"


def test_quickstart_composes_with_auto_precision(tmp_path: Path) -> None:
    cfg = api.compose(["experiment=quickstart"], output_dir=tmp_path)
    assert cfg.trainer.precision == "auto"
    assert [v.size for v in cfg.data.views] == [cfg.data.image_size] * 2


def test_a_key_given_twice_on_the_command_line_is_refused(tmp_path: Path) -> None:
    shards = [f"data.shards={tmp_path}/train-{i:04d}.tar" for i in range(4)]
    args = ["data=webdataset", *shards, f"hydra.run.dir={tmp_path / 'run'}"]
    done = run_cli(args, tmp_path, keep_repeats=True)
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: data.shards is given 4 times")
    assert f"data.shards={tmp_path}/train-0000.tar and" in lines[0]
    assert "\"data.shards='/data/train-{0000..0003}.tar'\"" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_plain_value_given_twice_is_refused_without_the_quoting_hint(tmp_path: Path) -> None:
    done = run_cli(["optim.lr=0.1", "seed=3", "++optim.lr=0.2"], tmp_path, keep_repeats=True)
    assert done.returncode == 2
    assert "Error: optim.lr is given 2 times (optim.lr=0.1 and optim.lr=0.2); give it once." in (
        done.stderr
    )
    assert "quote" not in done.stderr
