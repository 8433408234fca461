"""The guides' code blocks marked to run, and the README's, do run in a fresh interpreter."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..plugin.test_readme_example import example as readme_example
from ..runs import run_python
from .site import readme_blocks, runnable_blocks

# The README's own-Lightning-code example runs in tests/plugin/test_readme_example.py (with
# checks of what it prints); a guide that shows the same code is held by that test.
BLOCKS = {
    name: code
    for name, code in (runnable_blocks() | readme_blocks()).items()
    if code != readme_example()
}


def test_the_guides_hold_runnable_code() -> None:
    assert len(runnable_blocks()) >= 3
    assert readme_example() in runnable_blocks().values()


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_guide_code_runs(name: str, tmp_path: Path) -> None:
    script = tmp_path / "guide.py"
    script.write_text(BLOCKS[name])
    done = run_python([str(script)], timeout=600, cwd=tmp_path)
    assert "Traceback" not in done.stderr
