"""Building the documentation site and reading its guides, for the tests of ``tests/docs``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"```\{code-block\} python\n:class: runnable\n\n(.*?)```", re.DOTALL)


def build(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """The README's build command (warnings are errors) on ``source``, into ``out``."""
    command = ["sphinx", "-W", "--keep-going", "-E", "-n", "-q", "-b", "html"]
    return subprocess.run(
        [sys.executable, "-m", *command, str(source), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def guides() -> list[Path]:
    """Every Markdown page of the site."""
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)


def readme_blocks() -> dict[str, str]:
    """The README's Python blocks, by ``README.md:<n>``."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    return {f"README.md:{n}": code for n, code in enumerate(blocks)}


def runnable_blocks() -> dict[str, str]:
    """The guides' code blocks marked to run, by ``<page>:<n>``."""
    return {
        f"{page.relative_to(DOCS)}:{n}": code
        for page in guides()
        for n, code in enumerate(RUNNABLE.findall(page.read_text()))
    }
