"""What a method reads from the Trainer's training loader: its per-device batch size.

The learning rate follows the batch the Trainer actually runs, whichever datamodule or
loader made it: the per-device batch of the training loader times the world size times
gradient accumulation.
"""

from __future__ import annotations

from typing import Any

import lightning as L


def loader_batch_size(loader: Any) -> int | None:
    """Samples per batch of a ``DataLoader``.

    Its own ``batch_size``, else its batch sampler's, its sampler's or its dataset's (a
    dataset that yields whole batches).
    """
    owners = ("batch_sampler", "sampler", "dataset")
    for owner in (loader, *(getattr(loader, name, None) for name in owners)):
        size = getattr(owner, "batch_size", None)
        if isinstance(size, int) and size > 0:
            return size
    return None


def per_device_batch_size(trainer: L.Trainer) -> int:
    """Samples per training batch on one device, read from the Trainer's training loader.

    Sets the loader up if the Trainer has not yet (as ``estimated_stepping_batches`` does).

    Raises:
        ValueError: When the loader does not say its batch size (a ``batch_size=None``
            loader whose sampler and dataset have no ``batch_size``).
    """
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()
    loader = trainer.train_dataloader
    size = loader_batch_size(loader)
    if size is None:
        raise ValueError(
            f"the training loader ({type(loader).__name__}) does not say its batch size, which "
            "the learning rate is scaled by: give the DataLoader (or a dataset that yields "
            "whole batches) a batch_size, or set optim.scale_lr=false and optim.lr to the rate "
            "of your batch."
        )
    return size
