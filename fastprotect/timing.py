"""Per-stage wall-clock timing of one protection call, with a seam for GPU synchronisation.

:class:`StageTimer` is what :class:`fastprotect.protect.Protector` times its stages with. On a GPU,
kernels run asynchronously, so an unsynchronised clock charges queued work to whichever stage
happens to wait; benchmarks therefore pass ``StageTimer.for_device("cuda")``, which synchronises
before each reading. The default timer never synchronises (no cost on the serving path).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


class StageTimer:
    """Adds the wall time of each ``with timer(timings, "stage"):`` block to ``timings["stage"]`` (seconds)."""

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self._synchronize = synchronize or (lambda: None)

    @classmethod
    def for_device(cls, device: str | torch.device) -> StageTimer:
        """A timer that synchronises the device's stream before each clock reading (CUDA only)."""
        if torch.device(device).type == "cuda":
            return cls(torch.cuda.synchronize)
        return cls()

    @contextmanager
    def __call__(self, timings: dict[str, float], stage: str) -> Iterator[None]:
        self._synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._synchronize()
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
