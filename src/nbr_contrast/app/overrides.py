"""Checking command-line overrides before Hydra composes them.

:func:`check_overrides` compares every ``group.key=value`` override with the structured
configs (the selected methods' configs for ``method.*``) and every ``group=option`` with the
files in ``conf/<group>/``, so a misspelt key or option fails at once with the valid choices
and the closest match, instead of deep inside Hydra's composition.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

import nbr_contrast.app.config as c
from nbr_contrast.app.config import RunConfig
from nbr_contrast.app.method_schemas import METHOD_SCHEMAS
from nbr_contrast.app.schemas import CONF_DIR

GROUP_DEFAULTS = {"method": "nnclr"}
USER_TARGETS = ("backbone",)
"""Groups whose ``_target_`` is a user setting (``backbone=custom backbone._target_=...``)."""

SET_ELSEWHERE = {
    "output_dir": "the run folder is Hydra's: pass hydra.run.dir=<folder>",
    "method.name": "it names the method option: choose the method with method=<name>",
    "task.name": "it names the task option: choose the task with task=<name>",
}
"""Keys a run sets itself, and where the command line sets what they hold."""


class OverrideError(ValueError):
    """An override names a key that no config schema has."""


def _schema_fields(schema: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _schemas(methods: Sequence[str]) -> dict[str, list[type]]:
    schemas: dict[str, list[type]] = {
        "backbone": [c.BackboneConfig],
        "data": [c.DataConfig],
        "trainer": [c.TrainerConfig],
        "optim": [c.OptimConfig],
        "search": [c.SearchConfig],
        "logger": [c.LoggerConfig],
        "task": [c.TaskConfig],
    }
    method_schemas = [METHOD_SCHEMAS[m] for m in methods if m in METHOD_SCHEMAS]
    if method_schemas:
        schemas["method"] = method_schemas
    return schemas


def _experiment_choices(experiment: str, group: str) -> list[str]:
    """Options of ``group`` that ``conf/experiment/<experiment>.yaml`` selects (may be none)."""
    path = CONF_DIR / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        return []
    defaults = OmegaConf.load(path).get("defaults") or []
    return [
        str(entry[key])
        for entry in defaults
        if isinstance(entry, Mapping)
        for key in entry
        if str(key).removeprefix("override ").strip("/ ") == group
    ]


def _selected_methods(overrides: Sequence[str]) -> list[str]:
    """Methods a command selects: ``method=`` values, else its experiments', else the default."""
    named: list[str] = []
    from_experiments: list[str] = []
    for a in overrides:
        key, value = a.split("=", 1)
        if key == "method":
            named += value.split(",")
        elif key == "experiment":
            for experiment in value.split(","):
                from_experiments += _experiment_choices(experiment, "method")
    return named or from_experiments or [GROUP_DEFAULTS["method"]]


def override_key(arg: str) -> str | None:
    """The key an override sets (``+``/``++``/``~`` stripped), or ``None`` for a flag."""
    if arg.startswith("-") or "=" not in arg:
        return None
    return arg.split("=", 1)[0].lstrip("+~")


def last_wins(args: Sequence[str]) -> list[str]:
    """``args`` with each override key once, at its last value, as Hydra would resolve them.

    For programs that build a command line by appending overrides to a preset (a study
    driver, a test); the CLI refuses a key a person gives twice (:func:`check_duplicates`).
    """
    last = {override_key(a): i for i, a in enumerate(args)}
    return [a for i, a in enumerate(args) if override_key(a) is None or last[override_key(a)] == i]


def check_duplicates(args: Sequence[str]) -> None:
    """Refuse a key given twice on one command line (Hydra would keep the last silently).

    An unquoted brace pattern or glob is expanded by the shell into one argument per match
    (``data.shards=/d/train-{0000..0003}.tar`` becomes four ``data.shards=`` arguments), so
    the line names the quoting that passes it to Hydra whole. ``hydra.*`` keys are left to
    Hydra: Lightning starts the other DDP ranks with the command line plus its own
    ``hydra.run.dir``.

    Raises:
        OverrideError: Naming the key, its values and, for paths, the quoting.
    """
    values: dict[str, list[str]] = {}
    for arg in args:
        key = override_key(arg)
        if key is not None and not key.startswith("hydra."):
            values.setdefault(key, []).append(arg.split("=", 1)[1])
    for key, given in values.items():
        if len(given) < 2:
            continue
        shown = " and ".join(f"{key}={v}" for v in given[:3]) + (" ..." if len(given) > 3 else "")
        hint = ""
        if len(given) > 2 or any(c in v for v in given for c in "/*?[{"):
            hint = (
                f" If the shell expanded a brace pattern or a glob into these, quote it so that "
                f"it reaches the run whole: \"{key}='/data/train-{{0000..0003}}.tar'\"."
            )
        raise OverrideError(f"{key} is given {len(given)} times ({shown}); give it once.{hint}")


WORD_FLAGS = ("--cfg", "-c", "--package", "-p", "--info", "--config-path", "-cp")
WORD_FLAGS += ("--config-name", "-cn", "--config-dir", "-cd")
"""Hydra flags followed by a word of their own (``--cfg job``), which is no override."""


def check_words(args: Sequence[str]) -> None:
    """Refuse a command-line word that is no override: often the rest of a spaced value.

    ``data.root=/data/my photos`` unquoted reaches the program as ``data.root=/data/my`` and
    ``photos``; Hydra's message (``missing EQUAL``) does not say to quote it.

    Raises:
        OverrideError: Naming the word and the quoting of the value it likely belongs to.
    """
    previous, after_flag = "", False
    for arg in args:
        if after_flag or arg.startswith("-"):
            after_flag = arg in WORD_FLAGS
            continue
        if "=" in arg or arg.startswith("~"):
            previous = arg
            continue
        hint = ""
        if previous:
            key, value = previous.split("=", 1)
            hint = (
                f" If it is the rest of a value with spaces, quote the value for the shell and "
                f"for Hydra: \"{key}='{value} {arg}'\"."
            )
        raise OverrideError(f"'{arg}' is not a key=value setting.{hint}")


def check_overrides(args: Sequence[str]) -> None:
    """Fail fast on ``group.key=value`` overrides whose key no schema has.

    Args:
        args: Command-line arguments (Hydra's own flags and ``+``/``~`` overrides pass).

    Raises:
        OverrideError: With the valid keys (or the group's options) and the closest match.
    """
    overrides = [a for a in args if "=" in a and not a.startswith(("-", "+", "~", "hydra"))]
    schemas = _schemas(_selected_methods(overrides))
    top = {f.name for f in dataclasses.fields(RunConfig)} | {"experiment", "views"}
    for a in overrides:
        key, value = a.split("=", 1)
        parts = key.split(".")
        if key in SET_ELSEWHERE:
            raise OverrideError(f"{key} cannot be set on the command line; {SET_ELSEWHERE[key]}.")
        if len(parts) == 1 and (CONF_DIR / key).is_dir():
            _check_group_option(key, value)
        if parts[0] not in top:
            raise OverrideError(_unknown(key, parts[0], sorted(top), "the run config"))
        if len(parts) == 1 and key not in schemas:
            _check_value([RunConfig], key, key, value)
        if len(parts) < 2 or parts[0] not in schemas:
            continue
        fields = {
            k
            for schema in schemas[parts[0]]
            for k in _schema_fields(schema)
            if not k.startswith("_") or parts[0] in USER_TARGETS
        }
        if parts[1] not in fields:
            raise OverrideError(_unknown(key, parts[1], sorted(fields), f"'{parts[0]}'"))
        if len(parts) == 2:
            _check_value(schemas[parts[0]], parts[1], key, value)


KINDS = (
    ("to Integer", "is not an integer; write {key}=<integer>, e.g. {key}=3."),
    ("to Float", "is not a number; write {key}=<number>, e.g. {key}=0.5."),
    ("not a valid bool", "is not true or false; write {key}=true or {key}=false."),
    ("to string", "is not a single value; write {key}=<text> (quote it: \"{key}='...'\")."),
    ("to Dict", "is not a mapping; write {key}={{name:value}}."),
    ("Incompatible value 'None'", "cannot be null; give {key} a value."),
)
"""How OmegaConf's conversion errors read, and the line each becomes."""


def _check_value(schemas: Sequence[Any], name: str, key: str, value: str) -> None:
    """Refuse a value that cannot become the field's type, as Hydra would when composing.

    The value is parsed by Hydra's override grammar (each value of a sweep) and merged into
    every schema that has the field, so every type OmegaConf checks (integers, numbers,
    booleans, strings, lists and their items, mappings, views) is refused here with one line
    naming the key (``data.views[1].flip_p``) instead of Hydra's error after composing.

    Raises:
        OverrideError: For a value with unquoted spaces, one Hydra cannot parse, or one of
            the wrong type.
    """
    if _scalar(value) and any(ch.isspace() for ch in value) and value[:1] not in "'\"":
        raise OverrideError(
            f"{key}={value}: a value with spaces needs quotes that reach Hydra: "
            f"\"{key}='{value}'\" (the outer quotes are the shell's)."
        )
    values = _parsed_values(key, value)
    for schema in schemas:
        if name not in {f.name for f in dataclasses.fields(schema)}:
            continue
        for parsed in values:
            if isinstance(parsed, dict) and parsed and _is_mapping(schema, name):
                raise OverrideError(
                    f"{key}={value}: Hydra adds no keys to {key} this way; set them one by one "
                    f"(+{key}.<name>=<value>) or replace the mapping: ++{key}={value}."
                )
            problem = _misfit(schema, name, parsed)
            if problem is not None:
                setting, shown, reason = problem
                full = f"{key.rsplit('.', 1)[0]}.{setting}" if "." in key else setting
                if reason == "list":
                    raise OverrideError(
                        f"{key}={value}: {key} takes a list; write {key}=[{value}]."
                    )
                given = "" if shown == "" else f"={value if shown is None else shown}"
                line = reason.format(key=full)
                if "[" in setting and "; write" in line:  # an item: the fix is the whole list
                    line = line.split("; write")[0] + f"; fix it in {key}=[...]"
                    default = getattr(_blank(schema), name)
                    if not _list_item_schema(typing.get_type_hints(schema)[name]):
                        line += f", e.g. {key}={_shown(default)}"
                    line += "."
                raise OverrideError(f"{full}{given} {line}")


def _parsed_values(key: str, value: str) -> list[Any]:
    """The values an override gives (each of a sweep), as Hydra's grammar parses them.

    A sweep without a finite list of values (``interval``) gives none to check.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        override = OverridesParser.create().parse_override(f"{key}={value}")
    except HydraException as err:
        first = str(err).strip().splitlines()[0]
        raise OverrideError(
            f"{key}={value} cannot be read ({first}); quote a value with special characters: "
            f"\"{key}='...'\"."
        ) from None
    if not override.is_sweep_override():
        return [override.value()]
    try:
        return list(override.sweep_iterator())
    except HydraException:
        return []


def _misfit(schema: Any, name: str, value: Any) -> tuple[str, Any, str] | None:
    """``(setting, value, reason)`` when ``value`` cannot be field ``name`` of ``schema``.

    The items of a list of configs (``data.views``) are merged one by one, so the setting
    names the item: ``views[1].flip_p``.
    """
    item = _list_item_schema(typing.get_type_hints(schema)[name])
    if item is None or not isinstance(value, list):
        return _merge_problem(schema, {name: value})
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            return f"{name}[{i}]", entry, "is not a mapping; write each item as {{name:value}}."
        problem = _merge_problem(item, entry)
        if problem is not None:
            return f"{name}[{i}].{problem[0]}", problem[1], problem[2]
    return None


def _merge_problem(schema: Any, update: dict[str, Any]) -> tuple[str, Any, str] | None:
    from omegaconf.errors import ConfigKeyError, ValidationError

    try:
        OmegaConf.merge(_blank(schema), update)
    except ConfigKeyError as err:
        valid = ", ".join(_schema_fields(schema))
        return str(err.full_key), "", f"is not a setting here; valid keys: {valid}."
    except ValidationError as err:
        text = str(err.msg)
        if "is not a ListConfig" in text:
            return str(err.full_key), None, "list"
        shown = re.search(r"Value '(.*)' of type", text)
        reason = next((line for marker, line in KINDS if marker in text), None)
        if reason is None:
            reason = f"does not fit this setting ({text.splitlines()[0]})."
        return str(err.full_key), shown.group(1) if shown else None, reason
    return None


def _shown(values: Any) -> str:
    """A list as an override writes it: ``[20,200]``."""
    return "[" + ",".join(str(v) for v in values) + "]"


def _scalar(value: str) -> bool:
    """Whether an override value is a plain scalar (not a list, sweep, function or null)."""
    return not any(ch in value for ch in "[](){}$,") and value.strip() != "null"


@functools.cache
def _blank(schema: Any) -> Any:
    """An empty structured config of ``schema`` to merge values into."""
    return OmegaConf.structured(schema)


def _is_mapping(schema: Any, name: str) -> bool:
    """Whether field ``name`` of ``schema`` is a ``dict``."""
    kind = typing.get_type_hints(schema)[name]
    return (typing.get_origin(kind) or kind) is dict


def _list_item_schema(kind: Any) -> Any:
    """The dataclass of a ``list[<dataclass>]`` field's items, else ``None``."""
    args = typing.get_args(kind)
    if args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def _check_group_option(group: str, value: str) -> None:
    """Fail on ``group=option`` when ``conf/<group>/<option>.yaml`` does not exist."""
    if any(ch in value for ch in "()[]{}$") or value == "null":
        return  # sweep functions and interpolations are Hydra's to resolve
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    for option in value.split(","):
        if option not in options:
            close = difflib.get_close_matches(option, options, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise OverrideError(
                f"{group}={option} is not an option of '{group}'.{hint} "
                f"Available: {', '.join(options)}."
            )


def _unknown(key: str, name: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Unknown key '{key}'.{hint} Valid keys in {where}: {', '.join(valid)}."
