"""Timing one bank search without making the host wait for the device at search time.

On CUDA the search is bracketed by two CUDA events recorded on the current stream; the
elapsed time is read (which waits for the second event) only when asked for, on a logging
step. Elsewhere the host clock is read around the search.
"""

from __future__ import annotations

import time

import torch


class SearchTimer:
    """Started at construction, stopped by :meth:`stop`, read by :meth:`elapsed_ms`.

    Args:
        device: The device the search runs on.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.end: torch.cuda.Event | None = None
        if self.cuda:
            self.begin = torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.began = time.perf_counter()
            self.ended = self.began

    def stop(self) -> SearchTimer:
        """Mark the end of the search; returns the timer."""
        if self.cuda:
            self.end = torch.cuda.Event(enable_timing=True)
            self.end.record()
        else:
            self.ended = time.perf_counter()
        return self

    def elapsed_ms(self) -> float:
        """Milliseconds between start and stop (on CUDA, waits for the stop event)."""
        if self.end is not None:
            self.end.synchronize()
            return float(self.begin.elapsed_time(self.end))
        return (self.ended - self.began) * 1000.0
