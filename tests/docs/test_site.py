"""The documentation site builds with warnings as errors, and the check can fail."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from sphinx.util.inventory import InventoryFile

import nbr_contrast

from .site import DOCS, build, guides


def documented(out: Path) -> set[str]:
    """Every Python object the built site has an entry for."""
    with (out / "objects.inv").open("rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    python = [entries for kind, entries in inventory.items() if kind.startswith("py:")]
    return {name for entries in python for name in entries}


def named_in_guides() -> set[str]:
    """The public names (``nbr_contrast.__all__``) that a guide writes in backquotes."""
    public = {name for name in nbr_contrast.__all__ if not name.startswith("_")}
    words = {
        word
        for page in guides()
        for word in re.findall(r"`~?(?:nbr_contrast\.)?([A-Za-z_][\w.]*)", page.read_text())
    }
    return {word.split(".")[-1] for word in words} & public


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(DOCS, out)
    assert done.returncode == 0, done.stderr[-5000:]
    return out


def test_site_builds_without_a_warning(site: Path) -> None:
    assert (site / "index.html").is_file()
    for page in ("getting_started", "methods", "lightning", "troubleshooting"):
        assert (site / "guides" / f"{page}.html").is_file()


def test_every_public_name_in_the_guides_has_an_api_entry(site: Path) -> None:
    entries = documented(site)
    names = named_in_guides()
    assert {"NNCLR", "NeighbourIndexCallback", "ViewsDataModule", "Images"} <= names
    for name in names:
        value = getattr(nbr_contrast, name)
        target = (
            getattr(value, "__name__", "")
            if isinstance(value, type(nbr_contrast))
            else (f"{value.__module__}.{value.__qualname__}")
        )
        assert target in entries, f"{name} ({target}) is named in a guide but has no API entry"


def test_a_broken_reference_or_a_missing_entry_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy, ignore=shutil.ignore_patterns("_build"))
    guide = copy / "guides" / "lightning.md"
    guide.write_text(guide.read_text().replace("methods.co2.MoCoV2`", "methods.co2.MoCoV9`", 1))
    methods = copy / "api" / "methods.rst"
    entry = ".. autoclass:: nbr_contrast.methods.msf.BYOL\n"
    methods.write_text(methods.read_text().replace(entry, ""))
    done = build(copy, tmp_path / "out")
    assert done.returncode != 0
    assert "nbr_contrast.methods.co2.MoCoV9" in done.stderr
    assert "nbr_contrast.BYOL (nbr_contrast.methods.msf.BYOL) has no API entry" in done.stderr
