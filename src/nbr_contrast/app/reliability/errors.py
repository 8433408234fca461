"""The error of a setting that cannot work (its own module, so every check can raise it)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work; the message names the setting and the fix."""
