"""Views: the augmentation recipes and the transforms that make them.

Every recipe of ``conf/views/`` by name, at any image size, and the CPU transforms a
datamodule of your own can use::

    from nbr_contrast import views

    pair = views.recipe("byol", image_size=32)  # BYOL's two views (NNCLR, SNCLR, MoCo v3)
    transform = views.build_multiview(pair, mean=(0.5,) * 3, std=(0.25,) * 3)
    first, second = transform(pil_image)  # two normalised float tensors [3, 32, 32]
    dataset = views.ViewsDataset(my_dataset, pair)  # items {"views", "label", "sample_id"}

:class:`~nbr_contrast.data.datamodule.ViewsDataModule` takes the same recipe names.
"""

from __future__ import annotations

from nbr_contrast.data.config import ViewConfig
from nbr_contrast.data.dataset_source import ViewsDataset
from nbr_contrast.data.recipes import recipe_names as names
from nbr_contrast.data.recipes import view_recipe as recipe
from nbr_contrast.data.views import MultiView, build_multiview, build_view_transform

__all__ = [
    "MultiView",
    "ViewConfig",
    "ViewsDataset",
    "build_multiview",
    "build_view_transform",
    "names",
    "recipe",
]
