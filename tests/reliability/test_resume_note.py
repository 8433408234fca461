"""RESUME.md's command survives the shell and Hydra's override grammar for any folder name."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

from nbr_contrast import api
from nbr_contrast.app.overrides import check_overrides
from nbr_contrast.app.reliability import resume_command, write_resume_note
from nbr_contrast.app.schemas import CONF_DIR, register_configs

FOLDERS = ["my runs/nnclr 1", "résultats/日本", "it's here", "back\\slash", "end\\"]


@pytest.fixture
def as_cli() -> Iterator[list[str]]:
    """Pretend to be inside the CLI's Hydra run with a few command-line overrides."""
    overrides = ["optim.lr=0.3", "data.batch_size=16"]
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(hydra_cfg)
    yield overrides
    HydraConfig.instance().cfg = None


@pytest.mark.parametrize("name", FOLDERS)
def test_resume_command_round_trips_through_shell_and_hydra(
    name: str, tmp_path: Path, as_cli: list[str]
) -> None:
    out = tmp_path / name
    cfg = api.compose(as_cli, output_dir=out)
    note = write_resume_note(cfg).read_text()
    command = resume_command(cfg)
    assert command in note
    words = shlex.split(command)
    assert words[1:3] == ["-m", "nbr_contrast"]
    assert words[3:5] == as_cli and "resume=true" in words
    run_dir = [w for w in words if w.startswith("hydra.run.dir=")]
    assert len(run_dir) == 1
    parsed = OverridesParser.create().parse_overrides(run_dir)[0]
    assert parsed.value() == str(out.resolve())
    check_overrides(words[3:])
