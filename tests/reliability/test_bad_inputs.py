"""Every bad input ends in one ``Error:`` line naming the setting, exit code 2, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, open_dict

from nbr_contrast.app.reliability import ConfigError, validate_config

from ..runs import run_cli
from .conftest import SMALL, TINY, error_lines

# (overrides, expected substring of the one-line message); {train}/{test}/{corrupt}/{empty}
# are filled in with real paths.
CASES = [
    (["method=nnclrr"], "method=nnclrr is not an option of 'method'. Did you mean 'nnclr'?"),
    (["backbone=resnet19"], "backbone=resnet19 is not an option of 'backbone'"),
    (["data=cifar11"], "data=cifar11 is not an option of 'data'"),
    (["task=evaluate"], "task=evaluate is not an option of 'task'"),
    (["method.temprature=0.2"], "Unknown key 'method.temprature'. Did you mean 'temperature'?"),
    (["optim.name=adam"], "optim.name='adam' is unknown; valid: sgd, lars, adamw."),
    (["optim.lr=0"], "optim.lr=0.0 must be positive."),
    (["trainer.precision=8-mixed"], "trainer.precision='8-mixed' is invalid"),
    (["data.pipeline=tpu"], "data.pipeline='tpu' is unknown"),
    (["data.batch_size=1"], "data.batch_size=1 is too small to train"),
    (["data.views=[]"], "data.views has 0 view(s) but method=nnclr needs at least 2"),
    (["method.knn_k=500"], "method.knn_k: k=500 must be between 1 and the 100 training images"),
    (["method.queue_size=0"], "method.queue_size=0 must be positive"),
    (
        ["data.num_classes=5"],
        "data.num_classes=5 but the training data has 10 classes; set data.num_classes=10",
    ),
    (["data.on_corrupt=ignore"], "data.on_corrupt='ignore' is not one of ('fail', 'skip')"),
    (["data.train_path=/no/such.npz"], "data.train_path='/no/such.npz' does not exist"),
    (["data.train_path={corrupt}"], "cannot be decoded (cannot identify image file"),
    (["data=imagefolder", "data.root={empty}"], "data.root: no images found in"),
    (
        ["data=imagefolder", "data.root={split}"],
        "data.root: no class folders with images in '{split}/train'; "
        "expected {split}/train/<class>/<image>",
    ),
    (["data.train_path={empty_npz}"], "(empty, truncated or another format: No data left"),
    (["data.train_path={truncated}"], "(empty, truncated or another format: File is not a zip"),
    (
        ["data.train_path={labels}"],
        "data.num_classes=10 but 1 training label(s) fall outside [0, 10) (e.g. 12)",
    ),
    (
        ["+backbone.kwargs.no_such_arg=3"],
        "backbone.kwargs={{'no_such_arg': 3}} but backbone.name=resnet18 is built by this project",
    ),
    (
        ["backbone=custom", "backbone._target_=torch.nn.Linear"],
        "backbone._target_=torch.nn.Linear cannot be built with backbone.kwargs={{}} "
        "(Linear.__init__() missing 2 required positional arguments",
    ),
    (["data.batch_size=abc"], "data.batch_size=abc is not an integer; write data.batch_size="),
    (["seed=abc"], "seed=abc is not an integer; write seed=<integer>, e.g. seed=3."),
    (["optim.lr=fast"], "optim.lr=fast is not a number; write optim.lr=<number>"),
    (
        ["data.root=/my photos"],
        "data.root=/my photos: a value with spaces needs quotes that reach Hydra: "
        "\"data.root='/my photos'\"",
    ),
    (
        ["data.root=/my", "photos"],
        "'photos' is not a key=value setting. If it is the rest of a value with spaces, quote "
        "the value for the shell and for Hydra: \"data.root='/my photos'\".",
    ),
    (["data.batch_size=200"], "data.batch_size=200 is larger than the 100 training images"),
    (["task=knn"], "task=knn needs a checkpoint: add ckpt=PATH/TO/last.ckpt (or ckpt=last)."),
    (["task=knn", "ckpt=/no/such.ckpt"], "ckpt=/no/such.ckpt does not exist."),
    (["task=knn", "ckpt=last"], "ckpt=last: no run of method nnclr has a checkpoints/last.ckpt"),
    (["resume=true"], "resume=true but"),
    (
        ["method.temperature=-0.1"],
        "method.temperature=-0.1 must be > 0; change method.temperature.",
    ),
    (["method.knn_temperature=0"], "method.knn_temperature=0.0 must be > 0"),
    (["optim.lr=nan"], "optim.lr=nan is not a finite number; set optim.lr to a number."),
    (["optim.lr=inf"], "optim.lr=inf is not a finite number"),
    (["optim.momentum=1.5"], "optim.momentum=1.5 must be in [0, 1]; change optim.momentum."),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1.0 must be >= 0"),
    (["method.knn_k=0"], "method.knn_k=0 must be at least 1"),
    (["method.proj_output_dim=0"], "method.proj_output_dim=0 must be positive"),
    (["data.views=[{{size:0}},{{size:16}}]"], "data.views[0].size=0 must be positive"),
    (
        ["data.views=[{{size:16,flip_p:2}},{{size:16}}]"],
        "data.views[0].flip_p=2.0 must be in [0, 1]",
    ),
    (["data.image_size=0"], "data.image_size=0 must be positive"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be at least 1 (or -1 for no epoch"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1 (no epoch limit) needs a step limit"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 must be at least 1"),
    (["task=knn", "task.k=[0]"], "task.k[0]=0 must be at least 1"),
    (["task=knn", "task.temperature=[0.07,0]"], "task.temperature[1]=0.0 must be > 0"),
    (["task=linear", "task.label_smoothing=1.5"], "task.label_smoothing=1.5 must be in [0, 1)"),
    (["task=finetune", "task.layer_decay=0"], "task.layer_decay=0.0 must be in (0, 1]"),
    (["task=finetune", "task.mixup=-0.5"], "task.mixup=-0.5 must be >= 0 (0: off)"),
    (
        ["task=knn", "task.temperature=0.1"],
        "task.temperature=0.1: task.temperature takes a list; write task.temperature=[0.1].",
    ),
    (["trainer.compile=maybe"], "trainer.compile=maybe is not true or false"),
    (["task=knn", "task.k=[abc]"], "task.k[0]=abc is not an integer"),
    (["data.views=[{{size:16}},{{sizee:3}}]"], "data.views[1].sizee is not a setting here"),
    (
        ["data.views=[{{size:16,crop_scale:[0.9,0.1]}},{{size:16}}]"],
        "data.views[0].crop_scale=[0.9, 0.1] must be 0 < low <= high <= 1",
    ),
    (["backbone.kwargs={{width:64}}"], "set them one by one (+backbone.kwargs.<name>=<value>)"),
    (["output_dir=/tmp/x"], "output_dir cannot be set on the command line"),
    (["seed=-1"], "seed=-1 must be between 0 and 2**32 - 1"),
    (["trainer.devices=0"], "trainer.devices=0 is not a device count"),
    (["trainer.strategy=fsdp_magic"], "trainer.strategy='fsdp_magic' is unknown"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 trains on no batch"),
    (["optim.betas=[0.9]"], "optim.betas=[0.9] must be two numbers"),
    (["search.backend=annoy"], "search.backend='annoy' is unknown; valid: auto, torch, faiss."),
    (["method.knn_max_train=3"], "method.knn_max_train=3 must be at least"),
    (["method=snclr", "method.k=100"], "is smaller than the method.k=100 neighbours method=snclr"),
    (["method=mocov3", "method.k=5"], "method.k=5: method=mocov3 is method=snclr with k=0"),
]


@pytest.fixture
def paths(tiny_data: list[str], tmp_path: Path) -> dict[str, str]:
    train = tiny_data[1].split("=", 1)[1]
    with np.load(train) as a:
        arrays = {k: a[k].copy() for k in a}
    start, stop = arrays["offsets"][3], arrays["offsets"][4]
    arrays["jpeg"][start:stop] = 0  # image 3's bytes overwritten: not an image any more
    corrupt = tmp_path / "corrupt.npz"
    np.savez(corrupt, **arrays)
    empty = tmp_path / "empty"
    empty.mkdir()
    split = tmp_path / "split"
    (split / "train").mkdir(parents=True)
    (split / "val").mkdir()
    empty_npz = tmp_path / "empty.npz"
    empty_npz.write_bytes(b"")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(Path(train).read_bytes()[: Path(train).stat().st_size // 2])
    with np.load(train) as a:
        clean = {k: a[k].copy() for k in a}
    clean["labels"][7] = 12  # a label beyond the 10 classes
    relabelled = tmp_path / "labels.npz"
    np.savez(relabelled, **clean)
    return {
        "train": train,
        "corrupt": str(corrupt),
        "empty": str(empty),
        "split": str(split),
        "empty_npz": str(empty_npz),
        "truncated": str(truncated),
        "labels": str(relabelled),
    }


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_exits_2_with_one_line(
    overrides: list[str],
    message: str,
    tiny_data: list[str],
    paths: dict[str, str],
    tmp_path: Path,
    main_cli: Callable[[list[str]], tuple[int, str]],
) -> None:
    filled = [o.format(**paths) for o in overrides]
    argv = [*TINY, *tiny_data, *SMALL, *filled, f"hydra.run.dir={tmp_path / 'run'}"]
    if any(o.startswith("data=") for o in filled):
        argv = [a for a in argv if not a.startswith(("data.train_path", "data.test_path"))]
        argv.remove("data=npz")
    code, err = main_cli(argv)
    assert code == 2, err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1 and message.format(**paths) in lines[0], err
    assert not (tmp_path / "run").exists()  # no empty run folder left behind


def test_range_checks_cover_method_fields_by_name(tiny_cfg: Callable[..., DictConfig]) -> None:
    """A field a method adds later is checked by its name, with no list of methods to edit."""
    cfg = tiny_cfg()
    with open_dict(cfg.method):
        cfg.method.future_temperature = -1.0
        cfg.method.target_momentum = 2.0
    with pytest.raises(ConfigError, match=r"^method\.future_temperature=-1\.0 must be > 0"):
        validate_config(cfg)
    cfg.method.future_temperature = 0.5
    with pytest.raises(ConfigError, match=r"^method\.target_momentum=2\.0 must be in \[0, 1\]"):
        validate_config(cfg)
    cfg.method.target_momentum = 1.0
    validate_config(cfg)


def test_real_command_line_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = run_cli(["optim.name=adam", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Error: optim.name='adam' is unknown; valid: sgd, lars, adamw."
    ]
