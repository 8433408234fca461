"""Every field of every config dataclass, given a bad value, fails in one clean line.

For each field the walk tries a value of the wrong type, NaN and infinities where it is a
number, an empty value where it is a string or a list (all made from the field's type),
and the out-of-range values :data:`FIELDS` lists for it. Each must be refused by the checks
the command line runs before its trainer starts, with one line that names the field, as an
error the CLI prints as one ``Error:`` line with exit code 2 (an ``OverrideError``, or what
``is_user_error`` accepts); a value :data:`FIELDS` marks as legal must pass them all. A field
added to a schema without an entry in :data:`FIELDS` fails the coverage test, so the walk
keeps finding the next unchecked setting.

The checks are those of the CLI in its order: the override checks on the command line,
composition (the value merged into the composed config as Hydra merges an override), the
settings (``validate_config``, and for ``task.*`` the evaluation's ``check_task``), the
data and the method (``prepare_fit``) and the trainer (``build_trainer``). That the CLI turns
each of these errors into one ``Error:`` line, exit code 2 and no run folder, whatever the
stage that raises it, is shown by real launches in ``test_bad_inputs.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from nbr_contrast import api
from nbr_contrast.app import config as schemas
from nbr_contrast.app.build import build_trainer
from nbr_contrast.app.evaluation.head_task import check_task
from nbr_contrast.app.method_schemas import METHOD_SCHEMAS, METHODS
from nbr_contrast.app.overrides import (
    OverrideError,
    check_duplicates,
    check_overrides,
    check_words,
    last_wins,
)
from nbr_contrast.app.preflight import prepare_fit
from nbr_contrast.app.reliability import is_user_error, validate_config
from nbr_contrast.data.config import ViewConfig

from .conftest import TINY


@dataclass(frozen=True)
class Walk:
    """What the walk tries for one field beyond the values made from its type.

    Attributes:
        bad: Values out of range (or otherwise unusable): each must be refused.
        legal: Values of those made from the type that the field accepts: each must pass.
        base: Overrides that turn on the feature the field belongs to.
        why: Why the field has no out-of-range value (a switch, a free label), or why a
            value is legal.
        legal_in: ``(method, value)``: a value legal in that method only (its feature off).
    """

    bad: tuple[str, ...] = ()
    legal: tuple[str, ...] = ()
    base: tuple[str, ...] = ()
    why: str = ""
    legal_in: tuple[tuple[str, str], ...] = ()


SWITCH = Walk(why="a switch: true or false, both legal")
IMAGEFOLDER = ("data=imagefolder", "data.root={folder}", "data.batch_size=4")

FIELDS: dict[str, Walk] = {
    # run-level settings
    "seed": Walk(bad=("-1",)),
    "ckpt": Walk(bad=("/no/such.ckpt",)),
    "resume": SWITCH,
    "output_dir": Walk(bad=("runs/x",)),
    "plots": SWITCH,
    "knn_report": SWITCH,
    "knn_before": SWITCH,
    # backbone
    "backbone._target_": Walk(bad=("no.such.Net", "torch.nn.Linear"), base=("backbone=custom",)),
    "backbone.source": Walk(bad=("onnx",)),
    "backbone.name": Walk(bad=("resnet19",)),
    "backbone.image_size": Walk(bad=("0",)),
    "backbone.small_stem": SWITCH,
    "backbone.patch_size": Walk(bad=("0", "5"), base=("backbone=vit_tiny",)),
    "backbone.zero_init_residual": SWITCH,
    "backbone.drop_path_rate": Walk(bad=("-0.1", "1.0")),
    "backbone.weights": Walk(bad=("/no/such.pth",)),
    "backbone.kwargs": Walk(bad=("{width:64}",)),
    # data
    "data.name": Walk(why="a label of the data in run folders and messages"),
    "data.root": Walk(bad=("/no/such/folder",), base=IMAGEFOLDER),
    "data.labels": SWITCH,
    "data.split": Walk(
        legal=("''",), base=IMAGEFOLDER, why="STL-10's split: data=stl10's loader checks it"
    ),
    "data.eval_root": Walk(bad=("/no/such/folder",)),
    "data.train_path": Walk(bad=("/no/such.npz",)),
    "data.test_path": Walk(bad=("/no/such.npz",)),
    "data.shards": Walk(bad=("/no/such-{0..1}.tar",), base=("data=webdataset",)),
    "data.val_shards": Walk(
        legal=("/no/such.tar",), why="read with labelled data.shards only (test_shards.py)"
    ),
    "data.train_list": Walk(bad=("/no/such.txt",), base=IMAGEFOLDER),
    "data.class_list": Walk(bad=("/no/such.txt",), base=IMAGEFOLDER),
    "data.download": SWITCH,
    "data.num_classes": Walk(bad=("0", "5")),
    "data.image_size": Walk(bad=("0",)),
    "data.eval_crop_pct": Walk(bad=("0", "1.5")),
    "data.mean": Walk(bad=("[0.5]", "[0.5,0.5,0.5,0.5]")),
    "data.std": Walk(bad=("[0,1,1]", "[-1,1,1]", "[1]", "[1,1,1,1]")),
    "data.batch_size": Walk(bad=("0", "1", "101")),
    "data.eval_batch_size": Walk(bad=("0",)),
    "data.num_workers": Walk(bad=("-1",)),
    "data.pipeline": Walk(bad=("tpu",)),
    "data.views": Walk(bad=("[{size:16}]",)),
    "data.on_corrupt": Walk(bad=("ignore",)),
    # one view (data.views[0])
    "views.size": Walk(bad=("0",)),
    "views.crop": Walk(bad=("center",)),
    "views.crop_scale": Walk(bad=("[0.5]", "[0.9,0.1]", "[0,1]", "[0.5,1.5]")),
    "views.crop_ratio": Walk(bad=("[1]", "[2,0.5]", "[0,1]")),
    "views.pad": Walk(bad=("-1",)),
    "views.flip_p": Walk(bad=("-0.1", "1.5")),
    "views.jitter_p": Walk(bad=("1.5",)),
    "views.brightness": Walk(bad=("-0.1",)),
    "views.contrast": Walk(bad=("-0.1",)),
    "views.saturation": Walk(bad=("-0.1",)),
    "views.hue": Walk(bad=("-0.1", "0.6")),
    "views.grayscale_p": Walk(bad=("1.5",)),
    "views.blur_p": Walk(bad=("1.5",)),
    "views.blur_sigma": Walk(bad=("[1]", "[2,1]", "[0,1]")),
    "views.solarize_p": Walk(bad=("1.5",)),
    "views.solarize_threshold": Walk(bad=("-0.1", "1.5")),
    # trainer
    "trainer.accelerator": Walk(
        bad=("tpu", "''", *(() if torch.cuda.is_available() else ("gpu",)))
    ),
    "trainer.devices": Walk(
        bad=("abc", "0", "-2", "''", "[]", "[a]"),
        legal=("4",),
        why="4 CPU processes: the walk's runs set trainer.accelerator=cpu",
    ),
    "trainer.num_nodes": Walk(bad=("0",)),
    "trainer.strategy": Walk(bad=("fsdp_magic", "''")),
    "trainer.precision": Walk(bad=("8-mixed",)),
    "trainer.max_epochs": Walk(bad=("0", "-2")),
    "trainer.max_steps": Walk(bad=("0", "-2")),
    "trainer.limit_train_batches": Walk(bad=("0", "-1", "1.5", "abc", "nan")),
    "trainer.limit_val_batches": Walk(bad=("-1", "1.5", "abc", "nan"), legal=("0",)),
    "trainer.check_val_every_n_epoch": Walk(bad=("0",)),
    "trainer.log_every_n_steps": Walk(bad=("0",)),
    "trainer.accumulate_grad_batches": Walk(bad=("0",)),
    "trainer.gradient_clip_val": Walk(bad=("-1",)),
    "trainer.sync_batchnorm": SWITCH,
    "trainer.deterministic": SWITCH,
    "trainer.channels_last": SWITCH,
    "trainer.compile": SWITCH,
    "trainer.enable_progress_bar": SWITCH,
    "trainer.checkpoint_every_n_steps": Walk(bad=("-1",)),
    "trainer.benchmark": SWITCH,
    "trainer.compile_mode": Walk(bad=("fast",)),
    "trainer.progress_bar_refresh_rate": Walk(bad=("0",)),
    "trainer.progress_every_n_logs": Walk(bad=("-1",)),
    "trainer.finite_check_every_n_steps": Walk(bad=("-1",)),
    # optimiser
    "optim.name": Walk(bad=("adam",)),
    "optim.lr": Walk(bad=("0", "-0.1")),
    "optim.scale_lr": SWITCH,
    "optim.weight_decay": Walk(bad=("-1",)),
    "optim.momentum": Walk(bad=("-0.1", "1.5")),
    "optim.betas": Walk(bad=("[0.9]", "[0.9,1.0]", "[-0.1,0.9]")),
    "optim.eta": Walk(bad=("-0.1",)),
    "optim.clip_lr": SWITCH,
    "optim.exclude_bias_and_norm": SWITCH,
    "optim.warmup_epochs": Walk(bad=("-1",)),
    "optim.min_lr_ratio": Walk(bad=("-0.1", "1.5")),
    "optim.cosine_interval": Walk(bad=("batch",)),
    "optim.probe_lr": Walk(bad=("0",)),
    # neighbour search
    "search.backend": Walk(bad=("annoy",)),
    "search.chunk_size": Walk(bad=("0",)),
    "search.half": SWITCH,
    "search.ivf_threshold": Walk(bad=("0",)),
    "search.ivf_nprobe": Walk(bad=("0",)),
    "search.kmeans_iters": Walk(bad=("0",)),
    # loggers
    "logger.csv": SWITCH,
    "logger.tensorboard": SWITCH,
    "logger.wandb": SWITCH,
    "logger.project": Walk(legal=("''",), why="a W&B project name, read with logger.wandb only"),
    # evaluation tasks (task=linear unless the entry says otherwise)
    "task.name": Walk(bad=("evaluate",)),
    "task.epochs": Walk(bad=("0",)),
    "task.lr": Walk(bad=("0",)),
    "task.batch_size": Walk(bad=("0",)),
    "task.optimizer": Walk(bad=("adam",)),
    "task.weight_decay": Walk(bad=("-1",)),
    "task.warmup_epochs": Walk(bad=("-1",)),
    "task.precompute": Walk(bad=("true",), base=("task=finetune",)),
    "task.layer_decay": Walk(bad=("0", "1.5")),
    "task.mixup": Walk(bad=("-0.5", "0.5")),
    "task.cutmix": Walk(bad=("-0.5", "0.5")),
    "task.label_smoothing": Walk(bad=("-0.1", "1.0")),
    "task.k": Walk(bad=("[0]",)),
    "task.temperature": Walk(bad=("[0]", "[-0.1]")),
    "task.projector": SWITCH,
    # methods: each field, for every method whose schema has it
    "method._target_": Walk(bad=("no.such.Method", "torch.nn.Linear")),
    "method.name": Walk(bad=("mine",)),
    "method.knn_k": Walk(bad=("0", "101")),
    "method.knn_temperature": Walk(bad=("0",)),
    "method.knn_max_train": Walk(bad=("0",)),
    "method.collapse_warning": Walk(bad=("-0.1", "1.0")),
    "method.proj_hidden_dim": Walk(bad=("0",)),
    "method.proj_output_dim": Walk(bad=("0",)),
    "method.pred_hidden_dim": Walk(bad=("0",)),
    "method.proj_hidden_bn": SWITCH,
    "method.predictor_bias": SWITCH,
    "method.temperature": Walk(bad=("0",)),
    "method.queue_size": Walk(bad=("0",)),
    "method.use_nn": SWITCH,
    "method.stop_grad_self": SWITCH,
    "method.nn_warmup_steps": Walk(bad=("-1",)),
    "method.exclude_self": SWITCH,
    "method.momentum": Walk(bad=("-0.1", "1.5")),
    "method.final_momentum": Walk(bad=("1.5",)),
    "method.copy_ema_buffers": SWITCH,
    "method.alpha": Walk(bad=("-1",)),
    "method.consistency_temperature": Walk(bad=("0",)),
    "method.k": Walk(bad=("-1", "1000"), legal_in=(("supervised", "1000"),)),
    "method.bank_scope": Walk(bad=("node",)),
    "method.attention": Walk(bad=("softmax2",)),
    "method.detach_weights": SWITCH,
    "method.n_clusters": Walk(bad=("0", "1000")),
    "method.refresh_every": Walk(bad=("0",)),
    "method.warmup_epochs": Walk(bad=("-1",)),
    "method.mixer": Walk(bad=("mixup2",)),
    "method.mix_alpha": Walk(bad=("0",)),
    "method.sup_temperature": Walk(bad=("0",)),
    "method.dc_temperature": Walk(bad=("0",)),
    "method.sup_weight": Walk(bad=("-1",)),
    "method.dc_weight": Walk(bad=("-1",)),
    "method.confidence_mask": SWITCH,
    "method.ce_only_epochs": Walk(bad=("-1",)),
}
"""Every field the walk covers, by its setting (``method.<field>`` for every method that
has it, ``views.<field>`` for the items of ``data.views``)."""

GROUPS: dict[str, Any] = {
    "backbone": schemas.BackboneConfig,
    "data": schemas.DataConfig,
    "trainer": schemas.TrainerConfig,
    "optim": schemas.OptimConfig,
    "search": schemas.SearchConfig,
    "logger": schemas.LoggerConfig,
    "task": schemas.TaskConfig,
}
SMALL = {"proj_hidden_dim": 64, "pred_hidden_dim": 64, "proj_output_dim": 32, "queue_size": 48}
"""Small heads and banks for every method (and ``knn_k``, ``k`` within the tiny data)."""


def field_types(schema: Any) -> dict[str, Any]:
    """``field name -> type`` of a dataclass, ``Optional[X]`` as ``X``."""
    hints = typing.get_type_hints(schema)
    out = {}
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = args[0]
        out[f.name] = kind
    return out


def made_values(kind: Any) -> list[str]:
    """Values of the wrong type, not finite, or empty, made from a field's type."""
    origin = typing.get_origin(kind)
    if origin is list:
        item = typing.get_args(kind)[0]
        values = ["abc", "[]"]
        if item in (int, float):
            values.append("[abc]")
        if item is float:
            values.append("[nan]")
        return values
    return {
        int: ["abc", "nan"],
        float: ["abc", "nan", "inf", "-inf"],
        bool: ["maybe"],
        str: ["[a,b]", "''"],
        dict: ["abc"],
    }.get(origin or kind, [])


def every_field() -> Iterator[tuple[str, str, str, Any]]:
    """``(entry of FIELDS, method or '', override key, type)`` of every field of every schema."""
    run_groups = {"method", *GROUPS}
    for name, kind in field_types(schemas.RunConfig).items():
        if name not in run_groups:
            yield name, "", name, kind
    for group, schema in GROUPS.items():
        for name, kind in field_types(schema).items():
            yield f"{group}.{name}", "", f"{group}.{name}", kind
    for name, kind in field_types(ViewConfig).items():
        yield f"views.{name}", "", f"data.views[0].{name}", kind
    for method, schema in METHOD_SCHEMAS.items():
        for name, kind in field_types(schema).items():
            yield f"method.{name}", method, f"method.{name}", kind


def test_every_field_has_an_entry() -> None:
    entries = {entry for entry, *_ in every_field()}
    missing = sorted(entries - set(FIELDS))
    assert not missing, f"fields without bad values in FIELDS: {missing}"
    assert not sorted(set(FIELDS) - entries), "FIELDS names fields no schema has"
    for entry, walk in FIELDS.items():
        assert walk.bad or walk.why, f"{entry}: give out-of-range values or say why none"


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory, tiny_data: list[str]) -> dict[str, str]:
    """An image folder with train/ and val/ (from the tiny npz) for data=imagefolder."""
    from PIL import Image

    root = tmp_path_factory.mktemp("walk")
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = root / "folder" / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (16, 16), (40 * i, 80, 120)).save(folder / f"{i}.png")
    return {"folder": str(root / "folder"), "out": str(root / "run")}


class Walker:
    """Runs one override through the CLI's checks on a composed base config."""

    def __init__(self, tiny_data: list[str], places: dict[str, str]) -> None:
        self.tiny_data, self.places = tiny_data, places
        self.bases: dict[tuple[str, ...], tuple[list[str], DictConfig]] = {}

    def base(self, method: str, extra: tuple[str, ...]) -> tuple[list[str], DictConfig]:
        key = (method, *extra)
        if key not in self.bases:
            small = [f"method.{k}={v}" for k, v in SMALL.items() if k in _fields(method)]
            takes_k = "k" in _fields(method) and "k" not in getattr(METHODS[method], "fixed", {})
            small += ["method.knn_k=5"] + (["method.k=5"] if takes_k else [])
            args = [*TINY, *self.tiny_data, f"method={method}", *small]
            args += [e.format(**self.places) for e in extra]
            if any(a.startswith("data=") and a != "data=npz" for a in extra):
                args = [a for a in args if not a.startswith(("data=npz", "data.train_path"))]
                args = [a for a in args if not a.startswith("data.test_path")]
            args = last_wins(args)
            self.bases[key] = (args, api.compose(args, output_dir=self.places["out"]))
        return self.bases[key]

    def check(self, method: str, extra: tuple[str, ...], override: str) -> None:
        """Raise what the CLI's checks raise for ``override`` on the base run."""
        args, cfg = self.base(method, extra)
        line = last_wins([*args, override])
        check_words(line)
        check_duplicates(line)
        check_overrides(line)
        cfg = copy.deepcopy(cfg)
        parsed = OverridesParser.create().parse_override(override)
        OmegaConf.update(cfg, parsed.key_or_group, parsed.value(), merge=True)
        validate_config(cfg)
        if str(cfg.task.name) != "fit":
            check_task(cfg)
            return
        prepare_fit(cfg)
        build_trainer(cfg)


def _fields(method: str) -> set[str]:
    return {f.name for f in dataclasses.fields(METHOD_SCHEMAS[method])}


def _named(message: str, key: str) -> bool:
    """Whether a one-line message names setting ``key`` (a list's item counts)."""
    return key in message or key.split("[")[0] in message


def walk_cases(group: str) -> Iterator[tuple[str, str, str, str, bool, tuple[str, ...]]]:
    """``(entry, method, key, value, legal, base)`` of one group's fields."""
    for entry, method, key, kind in every_field():
        if entry.split(".")[0] != group and not (group == "run" and "." not in entry):
            continue
        walk = FIELDS[entry]
        base = walk.base
        if group == "task" and not any(b.startswith("task=") for b in base):
            base = ("task=linear", "ckpt=/dev/null", *base)
        legal = {*walk.legal, *(v for m, v in walk.legal_in if m == method)}
        for value in [*made_values(kind), *walk.bad, *walk.legal]:
            yield entry, method or "nnclr", key, value, value in legal, base


def findings(walker: Walker, group: str) -> list[str]:
    """What the walk found wrong in one group: lines for the report."""
    found = []
    for _entry, method, key, value, legal, base in walk_cases(group):
        override = f"{key}={value}"
        if key.startswith("data.views[0]."):
            name = key.rsplit(".", 1)[1]
            override = f"data.views=[{{size:16,{name}:{value}}},{{size:16}}]"
        where = f"method={method} {override}"
        try:
            walker.check(method, base, override)
        except Exception as err:
            message = str(err).strip()
            clean = isinstance(err, OverrideError) or is_user_error(err)
            if legal:
                found.append(f"{where}: legal but refused: {type(err).__name__}: {message}")
            elif not clean:
                found.append(f"{where}: not a clean error: {type(err).__name__}: {message}")
            elif "\n" in message or not _named(message, key):
                found.append(f"{where}: the line does not name {key}: {message}")
            continue
        if not legal:
            found.append(f"{where}: accepted")
    return found


GROUP_NAMES = ["run", "views", *GROUPS, "method"]


@pytest.mark.parametrize("group", GROUP_NAMES)
def test_bad_values_are_refused_naming_the_field(
    group: str,
    tiny_data: list[str],
    places: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    found = findings(Walker(tiny_data, places), group)
    assert not found, f"{len(found)} finding(s):\n" + "\n".join(found)
