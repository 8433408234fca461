"""State dicts: comparing one with a model, and loading ``backbone.weights`` files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn


def state_mismatch(state: Mapping[str, Tensor], model: nn.Module) -> str | None:
    """Why ``state`` would not load strictly into ``model``, or ``None`` when it would.

    Returns:
        ``missing keys [...], unexpected keys [...], shape mismatches [...]`` (five of each
        at most) or ``None``.
    """
    expected = {key: value.shape for key, value in model.state_dict().items()}
    got = {key: value.shape for key, value in state.items()}
    if expected == got:
        return None
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    shapes = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    return f"missing keys {missing[:5]}, unexpected keys {extra[:5]}, shape mismatches {shapes[:5]}"


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The ``dict[str, Tensor]`` in ``path``: a ``.safetensors`` file, else a ``torch.save`` one.

    Raises:
        TypeError: When a ``torch.save`` file holds something else.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise TypeError(f"{type(state).__name__} is not a dict of tensors")
    return state


def load_weights(model: nn.Module, path: str | Path, classifier: tuple[str, ...] = ()) -> None:
    """Load the state-dict file ``path`` (``backbone.weights``) into ``model``.

    Args:
        model: The backbone as built (small stem, image size and all).
        path: A ``torch.save``'d ``dict[str, Tensor]`` or a ``.safetensors`` file.
        classifier: Key prefixes of the classifier the backbone drops (``"fc."``, ...):
            such weights in the file are left out, so a classification checkpoint loads.

    Raises:
        FileNotFoundError: Naming ``backbone.weights`` when the file does not exist.
        ValueError: Naming ``backbone.weights`` when it is empty, unreadable or does not match
            ``model`` (the keys and shapes that differ).
    """
    if not str(path).strip():
        raise ValueError("backbone.weights is empty; pass a state-dict file, or null for none.")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone.weights={path} does not exist; pass a state-dict file.")
    try:
        state = read_state_dict(path)
    except Exception as error:
        reason = (str(error).splitlines() or [""])[0]
        raise ValueError(
            f"backbone.weights={path} is not a state-dict file ({type(error).__name__}: {reason})."
        ) from error
    state = {k: v for k, v in state.items() if not (classifier and k.startswith(classifier))}
    mismatch = state_mismatch(state, model)
    if mismatch:
        raise ValueError(
            f"backbone.weights={path} does not fit backbone {getattr(model, 'arch', '')!r}: "
            f"{mismatch}."
        )
    model.load_state_dict(state, strict=True)
