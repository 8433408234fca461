"""Shared utilities: distributed helpers, schedules, optimisers."""
