"""Evaluations use the data their checkpoint was trained on, unless the command chose other.

``task=knn ckpt=<run>`` on the default data config would evaluate a model trained on 16 px
images of one dataset on 32 px images of another, silently. :func:`use_checkpoint_data`
puts the checkpoint's ``data`` settings in the config instead, keeping what the command set:
``data=<option>`` keeps the command's whole data config, ``data.<key>=...`` that key; the
loader settings of this machine (workers, evaluation batch size, pipeline) are never taken
from the checkpoint. It says which data it used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nbr_contrast.app.reliability.checkpoint_io import read_run_config

# data settings of the machine running the evaluation, not of the trained model
LOCAL_KEYS = ("num_workers", "eval_batch_size", "pipeline", "download")


def checkpoint_config(ckpt: str | Path) -> dict:
    """The run config saved in a checkpoint written by ``task=fit``."""
    return read_run_config(ckpt)


def use_checkpoint_data(cfg: DictConfig, overrides: Sequence[str]) -> str:
    """Set ``cfg.data`` to the checkpoint's data config, keeping what ``overrides`` chose.

    Args:
        cfg: The evaluation config (``cfg.ckpt`` resolved to a file).
        overrides: The command's overrides (``data=...``/``data.key=...`` are the choices).

    Returns:
        One line saying which data the evaluation uses (also printed).
    """
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o]
    saved = checkpoint_config(str(cfg.ckpt)).get("data")
    if "data" in keys or not isinstance(saved, dict):
        where = "chosen on the command line" if "data" in keys else "configured"
        line = f"data: {cfg.data.name} at {cfg.data.image_size} px ({where})."
    else:
        chosen = {k.split(".")[1] for k in keys if k.startswith("data.")}
        keep = chosen | set(LOCAL_KEYS)
        taken = {k: v for k, v in saved.items() if k in cfg.data and k not in keep}
        cfg.data = OmegaConf.merge(cfg.data, taken)
        changed = f"; the command set {', '.join(sorted(chosen))}" if chosen else ""
        line = (
            f"data: {cfg.data.name} at {cfg.data.image_size} px, as the checkpoint was trained"
            f"{changed} (choose other data with data=<option> or data.<key>=...)."
        )
    print(line)
    return line
