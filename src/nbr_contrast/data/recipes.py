"""View recipes by name: ``"byol"`` is ``conf/views/byol.yaml`` at the data's image size.

The YAML files in ``conf/views/`` are the one place each recipe is written down, with the
source of every value; the command line composes them with Hydra and a Python user gets the
same :class:`~nbr_contrast.data.config.ViewConfig` list from :func:`view_recipe` (plain
OmegaConf, no Hydra), so ``ViewsDataModule(train, views="byol")`` trains on the views that
``views=byol`` gives on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nbr_contrast.data.config import ViewConfig, check_view  # also registers the recipes' resolvers

RECIPES_DIR = Path(__file__).resolve().parents[1] / "conf" / "views"
"""Where the view recipes live (``conf/views/<name>.yaml``)."""


def recipe_names() -> list[str]:
    """The names of the view recipes."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def view_recipe(name: str, image_size: int) -> list[ViewConfig]:
    """The views of recipe ``name`` for images of side ``image_size``.

    Raises:
        ValueError: For a name that is not a recipe (the valid ones are listed).
    """
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(
            f"views={name!r} is not a view recipe; valid: {', '.join(recipe_names())}."
        )
    root = OmegaConf.merge(
        {"data": {"image_size": int(image_size)}}, {"data": OmegaConf.load(path)}
    )
    views = OmegaConf.to_container(root.data.views, resolve=True)
    return [as_view(v) for v in views]  # type: ignore[union-attr]


def as_view(view: ViewConfig | Mapping[str, Any]) -> ViewConfig:
    """A :class:`~nbr_contrast.data.config.ViewConfig` from itself or a mapping of its fields.

    Raises:
        ValueError: For a key :class:`~nbr_contrast.data.config.ViewConfig` does not have.
    """
    if isinstance(view, ViewConfig):
        return view
    valid = [f.name for f in fields(ViewConfig)]
    unknown = sorted(set(view) - set(valid))
    if unknown:
        raise ValueError(f"views: unknown key(s) {unknown}; valid keys: {', '.join(valid)}.")
    return ViewConfig(
        **{k: (list(v) if isinstance(v, list | tuple) else v) for k, v in view.items()}
    )


def as_views(
    views: str | Sequence[ViewConfig | Mapping[str, Any]], image_size: int
) -> list[ViewConfig]:
    """The views a recipe name or a list describes (a name is taken at ``image_size``).

    Raises:
        ValueError: For an unknown recipe, an unknown key, an empty list or a view field
            that cannot work.
    """
    if isinstance(views, str):
        return view_recipe(views, image_size)
    resolved = [as_view(v) for v in views]
    if not resolved:
        raise ValueError("views is empty; give a recipe name (e.g. 'byol') or at least one view.")
    for i, view in enumerate(resolved):
        check_view(view, f"views[{i}]")
    return resolved
