"""The verdict's clean half of each recent upload, computed while the visitor chooses the settings.

The verdict (:func:`fastprotect.verdict.quick_verdict`) runs the autoencoder three times: on the clean
copy, the protected copy and noise of the same energy. The first does not depend on the settings, so the
page computes it as soon as an image is in the box (:func:`fastprotect.verdict.clean_reference`) and a
click pays two round trips, not three. A reference is only a shortcut: the verdict uses it when its copy is
the clean image's, pixel for pixel, and measures everything itself otherwise.

Kept in memory only (never on disk), at most ``capacity`` uploads, each dropped ``max_age_s`` after it
was made (the workspace's age: the privacy timer calls :meth:`CleanReferences.prune`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

from fastprotect.verdict import CleanReference


class CleanReferences:
    """Clean references by upload path (Gradio stores each upload under a content hash, so a path names its bytes)."""

    def __init__(self, capacity: int = 16, max_age_s: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.max_age_s, self._clock = capacity, max_age_s, clock
        self._entries: OrderedDict[str, tuple[float, Future]] = OrderedDict()
        self._lock = threading.Lock()

    def prepare(self, key: str, compute: Callable[[], CleanReference | None]) -> None:
        """Compute ``key``'s reference now, in the caller's thread, unless it is there or on its way. A failure
        leaves no entry (the verdict then measures the clean copy itself)."""
        with self._lock:
            self._prune_locked()
            if key in self._entries:
                return
            future: Future = Future()
            self._entries[key] = (self._clock(), future)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        try:
            future.set_result(compute())
        except BaseException as error:
            with self._lock:
                if self._entries.get(key, (0, None))[1] is future:
                    del self._entries[key]
            future.set_exception(error)
            raise

    def get(self, key: str | None, timeout_s: float = 10.0) -> CleanReference | None:
        """``key``'s reference, waiting up to ``timeout_s`` for one being computed; None when there is none."""
        if key is None:
            return None
        with self._lock:
            self._prune_locked()
            entry = self._entries.get(key)
        if entry is None:
            return None
        try:
            return entry[1].result(timeout=timeout_s)
        except Exception:  # failed or too slow: the verdict measures the clean copy itself
            return None

    def prune(self) -> None:
        """Drop what is older than ``max_age_s``."""
        with self._lock:
            self._prune_locked()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _prune_locked(self) -> None:
        oldest = self._clock() - self.max_age_s
        for key in [key for key, (made, _) in self._entries.items() if made < oldest]:
            del self._entries[key]
