"""``LightningCLI(NNCLR, ViewsDataModule)`` builds both from a YAML file.

The signatures are plain typed keyword arguments, so jsonargparse reads them: the method's
own hyper-parameters, its backbone by name and a partial optimiser recipe, the callback by
class path, and the datamodule's datasets as class paths of the package's ``Images``.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from nbr_contrast import NNCLR, NeighbourIndexCallback, ViewsDataModule

CONFIG = """
seed_everything: 5
trainer:
  accelerator: cpu
  max_epochs: 1
  limit_train_batches: 2
  limit_val_batches: 1
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  callbacks:
    - class_path: nbr_contrast.NeighbourIndexCallback
      init_args: {backend: torch}
model:
  backbone: resnet18
  num_classes: 10
  knn_k: 10
  proj_hidden_dim: 32
  pred_hidden_dim: 32
  proj_output_dim: 16
  queue_size: 64
  temperature: 0.1
  optim: {lr: 0.3}
data:
  train:
    class_path: nbr_contrast.data.images.Images
    init_args: {name: cifar10_mini, split: train}
  test:
    class_path: nbr_contrast.data.images.Images
    init_args: {name: cifar10_mini, split: test}
  views: byol
  image_size: 16
  batch_size: 16
  eval_batch_size: 200
  num_workers: 0
"""


def test_lightning_cli_builds_and_fits_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "nnclr.yaml"
    path.write_text(CONFIG)
    cli = LightningCLI(
        NNCLR,
        ViewsDataModule,
        args=["fit", "--config", str(path), f"--trainer.default_root_dir={tmp_path}"],
        save_config_kwargs={"overwrite": True},
    )
    model, data = cli.model, cli.datamodule
    assert isinstance(model, NNCLR) and isinstance(data, ViewsDataModule)
    assert (model.temperature, model.queue_size, model.embedding_dim) == (0.1, 64, 16)
    assert model.optim_config.lr == 0.3 and model.optim_config.name == "lars"  # the recipe's
    assert model.hparams["backbone"]["name"] == "resnet18"
    assert [v.size for v in data.views] == [16, 16] and data.views[1].solarize_p == 0.2
    callbacks = [c for c in cli.trainer.callbacks if isinstance(c, NeighbourIndexCallback)]
    assert len(callbacks) == 1 and callbacks[0].backend == "torch"
    assert cli.trainer.global_step == 2
    assert callbacks[0].index is not None
    assert int((callbacks[0].index.bank("support").payloads["sample_id"] >= 0).sum()) == 32
