"""The README's "In your own Lightning code" example runs as shown, in a fresh interpreter."""

from __future__ import annotations

import re
from pathlib import Path

from ..runs import run_python

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### In your own Lightning code"


def example() -> str:
    """The first Python block of the README's own-Lightning-code section."""
    text = README.read_text()
    section = text[text.index(SECTION) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no Python block under {SECTION!r}"
    return match.group(1)


def test_readme_example_trains_and_fills_the_support_set(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example())
    lines = run_python([str(script)], timeout=600, cwd=tmp_path).stdout.strip().splitlines()
    seen, accuracy = lines[-1].split(" ", 1)
    assert int(seen) == 4 * 128  # four batches of 128 in the support set
    assert 0.0 <= float(accuracy) <= 100.0  # the kNN monitor's accuracy, in percent
