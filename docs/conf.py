"""Sphinx configuration of the documentation site: guides (MyST Markdown) and the API reference.

Build it with ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html`` (the
``docs`` extra installs Sphinx, furo and MyST). Every warning is an error: a broken link, a
cross-reference that resolves nowhere (``-n``), or a public name of ``nbr_contrast.__all__``
without an API entry (:func:`check_public_names`). References into other packages (torch,
Lightning, ...) are not resolved: the site is built offline, without intersphinx.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import nbr_contrast  # noqa: E402
from sphinx.util import logging  # noqa: E402

project = "nbr_contrast"
author = "the nbr_contrast developers"
copyright = f"2026, {author}"
release = version = nbr_contrast.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "examples", "images/README.md"]
html_theme = "furo"
html_title = f"nbr_contrast {release}"
html_static_path: list[str] = []
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "separated"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_attr_annotations = True
nitpicky = True
# Names outside this package (no intersphinx offline) and type-hint spellings autodoc cannot
# resolve; any other reference must resolve, or the build fails.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|lightning|L|nn|np|numpy|PIL|omegaconf|hydra|torchvision|torchmetrics)\b.*"),
    (r"py:.*", r"(Tensor|Image|DataLoader|Dataset|Sampler|Module|Callback|Trainer|DictConfig)"),
    (r"py:.*", r"(Path|TextIO|Callable|Iterable|Iterator|Mapping|Sequence|ClassVar|Any|NamedTuple)"),
    (r"py:.*", r"(Literal|Reduction|SampleKey|Transform|Combine|os\.PathLike|IO|_PATH)"),
    (r"py:.*", r"(LightningModule|LightningDataModule|OptimizerLRSchedulerConfig|Figure|Axes)"),
    (r"py:.*", r"(Table|Progress|TorchCheckpointIO|TorchDispatchMode|Stateful)"),
    (r"py:.*", r"(collections|pathlib|abc|rich|typing|enum|dataclasses|matplotlib)\..*"),
]


def check_public_names(app: Any, exception: Exception | None) -> None:
    """Warn about every public name of ``nbr_contrast.__all__`` without an API entry."""
    if exception is not None:
        return
    documented = {name for name, *_ in app.env.get_domain("py").get_objects()}
    for name in nbr_contrast.__all__:
        if name.startswith("__"):
            continue
        value = getattr(nbr_contrast, name)
        module = getattr(value, "__name__", None) if isinstance(value, type(sys)) else None
        target = module or f"{value.__module__}.{value.__qualname__}"
        if target not in documented:
            logging.getLogger(__name__).warning(
                f"nbr_contrast.{name} ({target}) has no API entry: add it to a page of docs/api/."
            )


def setup(app: Any) -> None:
    """Check the public API's coverage when the build ends."""
    app.connect("build-finished", check_public_names)
