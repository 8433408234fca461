"""What a method and the neighbour-index callback may ask of a datamodule.

A method trains on any datamodule (or plain loaders) whose training batches follow the batch
contract of :class:`~nbr_contrast.methods.base.BaseMethod`. Two methods need more from the
data, and ask for it through these small protocols, which
:class:`~nbr_contrast.data.datamodule.ViewsDataModule` implements:

* :class:`PlainTrainImages`: the training images without augmentation, for a whole-dataset
  graph (CLIM's kNN graph and clusters);
* :class:`NeighbourServing`: a training loader that serves, with every sample, one of its
  selected neighbour images (CLIM's mixtures).

``labelled`` is optional: a datamodule that says its training images have no label
turns off the online probe and the label logs. :func:`require` names the missing piece in
one line.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor
from torch.utils.data import DataLoader


@runtime_checkable
class PlainTrainImages(Protocol):
    """A datamodule that hands out its training images with the evaluation transform."""

    def plain_train_loader(self, rank: int = 0, world_size: int = 1) -> DataLoader[Any]:
        """Every ``world_size``-th training image from ``rank`` on, un-augmented, in order.

        Batches are dicts ``{"image": [B, 3, S, S], "label": [B], "sample_id": [B]}``, where
        ``index`` is each image's position in the training set.
        """
        ...


@runtime_checkable
class NeighbourServing(Protocol):
    """A datamodule whose training batches can carry one selected neighbour per sample."""

    def enable_neighbour_serving(self, k: int) -> None:
        """Make room for ``k`` neighbours per image (called before the training loader starts)."""
        ...

    def set_neighbour_table(self, table: Tensor, counts: Tensor) -> None:
        """Serve neighbours from ``table [N, k]`` (the first ``counts [N]`` of each row)."""
        ...

    @property
    def serving_neighbours(self) -> bool:
        """Whether training batches carry ``neighbour_views`` and ``neighbour_id`` now."""
        ...


def require(datamodule: Any, protocol: type, who: str, purpose: str) -> Any:
    """``datamodule`` if it implements ``protocol``, else one ``TypeError`` naming the fix.

    Args:
        datamodule: The Trainer's datamodule (``None`` when loaders were passed directly).
        protocol: :class:`PlainTrainImages` or :class:`NeighbourServing`.
        who: What needs it (``"CLIM"``).
        purpose: What for (``"its whole-dataset kNN graph"``).

    Raises:
        TypeError: When the datamodule is missing or lacks one of the protocol's members.
    """
    if datamodule is not None and isinstance(datamodule, protocol):
        return datamodule
    members = [m for m in _members(protocol) if not hasattr(datamodule, m)]
    have = "no datamodule" if datamodule is None else f"{type(datamodule).__name__}"
    raise TypeError(
        f"{who} needs a datamodule with {', '.join(members)} for {purpose}, and the Trainer "
        f"has {have}: pass nbr_contrast.ViewsDataModule to trainer.fit(datamodule=...), or "
        f"implement nbr_contrast.data.protocols.{protocol.__name__} on yours."
    )


def _members(protocol: type) -> list[str]:
    return [name for name in vars(protocol) if not name.startswith("_")]
