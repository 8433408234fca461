from __future__ import annotations

import torch

from nbr_contrast.app.build import datamodule_of
from nbr_contrast.data.config import DataConfig, ViewConfig
from nbr_contrast.data.datamodule import ViewsDataModule

PLAIN = ViewConfig(size=32, crop="none", flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)


def make(num_workers: int = 0) -> ViewsDataModule:
    cfg = DataConfig(views=[PLAIN, PLAIN], batch_size=8, num_workers=num_workers)
    datamodule = datamodule_of(cfg, 0)
    datamodule.setup("fit")
    return datamodule


def shifted_table(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    table = torch.full((n, 2), -1, dtype=torch.int64)
    table[:, 0] = (torch.arange(n) + 1) % n
    counts = torch.ones(n, dtype=torch.int64)
    counts[7] = 0
    table[7, 0] = 7  # fallback row: the image itself
    return table, counts


def test_served_neighbour_is_the_selected_image() -> None:
    datamodule = make()
    datamodule.enable_neighbour_serving(2)
    dataset = datamodule.train_dataset()
    assert "neighbour_views" not in dataset[3]
    datamodule.set_neighbour_table(*shifted_table(datamodule.num_train))
    for i in (0, 3, 7, 4999):
        item = dataset[i]
        j = int(item["neighbour_id"])
        assert j == (7 if i == 7 else (i + 1) % 5000)
        assert torch.equal(item["neighbour_views"][0], dataset[j]["views"][0])
        assert len(item["neighbour_views"]) == 2


def test_persistent_workers_see_a_table_set_later() -> None:
    datamodule = make(num_workers=1)
    datamodule.enable_neighbour_serving(2)
    loader = datamodule.train_dataloader()
    first = next(iter(loader))
    assert "neighbour_id" not in first
    datamodule.set_neighbour_table(*shifted_table(datamodule.num_train))
    batch = next(iter(loader))
    expected = (batch["sample_id"] + 1) % 5000
    expected[batch["sample_id"] == 7] = 7
    assert torch.equal(batch["neighbour_id"], expected)
