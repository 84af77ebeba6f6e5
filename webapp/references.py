"""The verdict's clean half of each recent upload, computed while the visitor chooses the settings.

The verdict (:func:`fastprotect.verdict.quick_verdict`) runs the autoencoder three times: on the clean
copy, the protected copy and noise of the same energy. The first does not depend on the settings, so the
page starts it as soon as an image is in the box (:func:`fastprotect.verdict.clean_reference`) and a
click pays two round trips, not three. A reference is only a shortcut: the verdict uses it when its copy is
the clean image's, pixel for pixel, and measures everything itself otherwise.

The work runs on one background thread of its own, never in Gradio's queue (an upload must not take a place
a click needs), and at most :data:`MAX_PENDING` wait for it: under a burst of uploads the rest are skipped
and their clicks measure all three. Kept in memory only (never on disk), at most ``capacity`` uploads, each
dropped ``max_age_s`` after it was made (the workspace's age: the privacy timer calls
:meth:`CleanReferences.prune`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

from fastprotect.verdict import CleanReference

logger = logging.getLogger("fastprotect.app")

MAX_PENDING = 4  # references waiting for the background thread; more uploads than this at once are not prepared
# A click waits at most this long for a reference on its way: about two round trips on a 2-core CPU, after
# which measuring the clean copy itself is no slower.
WAIT_S = 1.5


class CleanReferences:
    """Clean references by upload path (Gradio stores each upload under a content hash, so a path names its bytes)."""

    def __init__(self, capacity: int = 16, max_age_s: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.max_age_s, self._clock = capacity, max_age_s, clock
        self._entries: OrderedDict[str, tuple[float, Future]] = OrderedDict()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def start(self, key: str, compute: Callable[[], CleanReference | None]) -> bool:
        """Compute ``key``'s reference on the background thread unless it is there or on its way; False when
        skipped because :data:`MAX_PENDING` are already waiting. Returns at once."""
        with self._lock:
            self._prune_locked()
            if key in self._entries:
                return True
            if sum(not future.done() for _, future in self._entries.values()) >= MAX_PENDING:
                return False
            future: Future = Future()
            self._add_locked(key, future)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="fastprotect-verdict")
            executor = self._executor
        executor.submit(self._run, key, future, compute)
        return True

    def prepare(self, key: str, compute: Callable[[], CleanReference | None]) -> None:
        """The same as :meth:`start`, in the caller's thread (tests, and callers that are a background job
        themselves). A failure leaves no entry and is raised."""
        with self._lock:
            self._prune_locked()
            if key in self._entries:
                return
            future: Future = Future()
            self._add_locked(key, future)
        error = self._run(key, future, compute)
        if error is not None:
            raise error

    def get(self, key: str | None, timeout_s: float = WAIT_S) -> CleanReference | None:
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
        except (Exception, CancelledError):  # failed or too slow: the verdict measures the clean copy itself
            return None

    def prune(self) -> None:
        """Drop what is older than ``max_age_s``."""
        with self._lock:
            self._prune_locked()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _run(self, key: str, future: Future, compute: Callable[[], CleanReference | None]) -> Exception | None:
        """Resolve ``future`` with ``compute()``; on failure drop the entry and return the error (always resolved:
        a click waiting on it never hangs)."""
        try:
            future.set_result(compute())
            return None
        except Exception as error:
            with self._lock:
                if self._entries.get(key, (0.0, None))[1] is future:
                    del self._entries[key]
            future.set_exception(error)
            logger.debug("no clean reference for %r", key, exc_info=True)
            return error

    def _add_locked(self, key: str, future: Future) -> None:
        self._entries[key] = (self._clock(), future)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def _prune_locked(self) -> None:
        oldest = self._clock() - self.max_age_s
        for key in [key for key, (made, _) in self._entries.items() if made < oldest]:
            del self._entries[key]
