"""neighbours package."""
