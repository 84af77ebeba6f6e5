"""Every bound of the Space in one frozen dataclass, built once from the environment.

``app.build_demo(loaded, limits=...)`` takes it, so tests pass small limits instead of patching
module globals. Variables (fastprotect/environment.py, docs/CONFIGURATION.md):
``FASTPROTECT_MAX_FILE_SIZE``, ``FASTPROTECT_SPACE_MAX_PIXELS``, ``FASTPROTECT_MAX_BATCH_FILES``,
``FASTPROTECT_CONCURRENCY``, ``FASTPROTECT_QUEUE_SIZE``, ``FASTPROTECT_FILE_MAX_AGE``; the others are constants here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastprotect import environment
from fastprotect.vocabulary import MAX_REFINE_STEPS


@dataclass(frozen=True)
class SpaceLimits:
    max_file_size: str = "25mb"  # per uploaded file, enforced by Gradio before the handler runs
    max_pixels: int = 24_000_000  # one image, decoded size (width × height), checked from the header
    max_batch_files: int = 20
    batch_max_pixels: int = 100_000_000  # the summed pixels of one batch
    # Bytes one request may write (its PNGs, copies for the page, the batch ZIP), estimated from the
    # image headers before any work; a request over it is refused with one line.
    request_disk_bytes: int = 1_200_000_000
    concurrency: int = 2  # per event; protection is CPU-bound
    queue_size: int = 32
    # Every upload, result and Gradio copy is deleted this long after it was written, by a timer
    # (webapp.privacy.Sweeper) that runs whether or not anyone visits; tests shorten it.
    workspace_max_age_s: float = 900
    view_max_side: int = 1536  # the before/after pair and the mimic tab's copies (the PNG is full size)
    round_trip_max_side: int = 512  # the instant "what a mimic sees" check runs on a copy this size
    duel_images: tuple[int, int] = (4, 8)
    max_refine_steps: int = MAX_REFINE_STEPS  # the library's bound: the same in UI, API, library and CLI

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_batch_files", "batch_max_pixels", "request_disk_bytes", "concurrency", "queue_size", "workspace_max_age_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SpaceLimits.{name} must be positive, got {getattr(self, name)}")

    @property
    def sweep_every_s(self) -> float:
        """How often the timer looks for old files: every 30 s, or a tenth of a shorter age, so a
        file never outlives ``workspace_max_age_s`` by more than that."""
        return min(30.0, self.workspace_max_age_s / 10)

    @property
    def delete_cache(self) -> tuple[int, int]:
        """``gr.Blocks(delete_cache=...)``: (how often, older than) in whole seconds. Gradio's own sweep,
        kept for its cache when that is not the workspace (tests); the Space's timer covers both."""
        return (max(1, math.ceil(self.sweep_every_s)), max(1, math.ceil(self.workspace_max_age_s)))

    @classmethod
    def from_environment(cls) -> SpaceLimits:
        """The limits with the Space's ``FASTPROTECT_*`` variables applied (a bad value: ValueError)."""
        return cls(
            max_file_size=environment.get("FASTPROTECT_MAX_FILE_SIZE") or cls.max_file_size,
            max_pixels=environment.get_int("FASTPROTECT_SPACE_MAX_PIXELS", cls.max_pixels),
            max_batch_files=environment.get_int("FASTPROTECT_MAX_BATCH_FILES", cls.max_batch_files),
            concurrency=environment.get_int("FASTPROTECT_CONCURRENCY", cls.concurrency),
            queue_size=environment.get_int("FASTPROTECT_QUEUE_SIZE", cls.queue_size),
            workspace_max_age_s=environment.get_int("FASTPROTECT_FILE_MAX_AGE", int(cls.workspace_max_age_s)),
        )
