"""Resume refuses settings that change the run's trajectory, listing every one of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from nbr_contrast import api
from nbr_contrast.app.reliability import ConfigError, check_resumable


def test_resume_lists_every_changed_trajectory_setting_and_allows_the_others(
    run_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    api.fit(run_cfg(run, "plots=false"))
    last = run / "checkpoints" / "last.ckpt"

    changed = run_cfg(
        run, "resume=true", "data.batch_size=8", "optim.lr=0.1", "method.temperature=0.3", "seed=1"
    )
    with pytest.raises(ConfigError) as refused:
        check_resumable(changed, last)
    message = str(refused.value)
    assert "\n" not in message
    for change in (
        "data.batch_size=8 (was 16)",
        "optim.lr=0.1 (was 0.4)",
        "method.temperature=0.3 (was 0.2)",
        "seed=1 (was 42)",
    ):
        assert change in message
    assert "RESUME.md" in message and "trainer.max_epochs may grow" in message

    views = run_cfg(run, "resume=true", "data.views=[{size:16},{size:16,flip_p:0}]")
    with pytest.raises(ConfigError, match=r"data\.views=\["):
        check_resumable(views, last)

    allowed = run_cfg(
        run,
        "resume=true",
        "trainer.max_epochs=3",
        "data.num_workers=1",
        "trainer.enable_progress_bar=true",
        "logger.tensorboard=true",
        "trainer.log_every_n_steps=5",
    )
    check_resumable(allowed, last)
    check_resumable(run_cfg(tmp_path / "new", "ckpt=" + str(last), "optim.lr=0.1"), last)
    other_heads = run_cfg(tmp_path / "new", "ckpt=" + str(last), "method.proj_output_dim=16")
    with pytest.raises(
        ConfigError, match=r"weights of other sizes .*proj_output_dim=16 \(was 32\)"
    ):
        check_resumable(other_heads, last)
