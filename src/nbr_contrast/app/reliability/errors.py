"""The error of a setting that cannot work (its own module, so every check can raise it)."""

from __future__ import annotations

from typing import NoReturn


class ConfigError(ValueError):
    """A setting that cannot work; the message names the setting and the fix."""


def fail(message: str) -> NoReturn:
    """Raise :class:`ConfigError` with ``message``."""
    raise ConfigError(message)
