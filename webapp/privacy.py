"""What the Space keeps of a visitor, where, for how long, and what removes it.

One folder holds everything (:class:`webapp.space.Workspace`): it is also Gradio's cache
(:func:`use_as_gradio_cache`), so a visitor's upload, every result and every copy Gradio serves lie
below it. Four things remove them, each proved by tests/test_privacy.py:

* a timer (:class:`Sweeper`), every 30 s whether or not anyone visits: what is older than the age
  (``SpaceLimits.workspace_max_age_s``, 15 minutes; ``FASTPROTECT_FILE_MAX_AGE``);
* SIGTERM / SIGINT (:func:`install_cleanup`) and a normal exit (``atexit``): the whole folder;
* the next start (:func:`remove_orphans`): folders of earlier Space processes that died without
  cleaning up (``kill -9``, a crash), recognised by their name and a lock no living process holds;
* a refused or failed request: its own request folder, at once.

A request never deletes a file it did not create: Gradio's upload cache is content-addressed (two
visitors who upload the same bytes under the same name share one path), so uploads go only with
the timer or the whole folder. Each picture a result shows is written once (:func:`store_detail_views`),
inside the request's folder, which Gradio then serves without copying.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .limits import SpaceLimits
from .space import VIEW_COMPRESS_LEVEL, ProtectOutcome, Workspace

logger = logging.getLogger("fastprotect.app")


def privacy_markdown(limits: SpaceLimits) -> str:
    """The About tab's account of a visitor's files: every sentence is held by a test."""
    age = _duration(limits.workspace_max_age_s)
    every = _duration(limits.sweep_every_s)
    return (
        f"**Your files.** Your upload, your results (the protected PNG, the before/after pictures, the perturbation "
        f"and the map) and the batch ZIP are kept in one private temporary folder of this server, never anywhere else, "
        f"so that you can download them and try another strength without uploading again. Each file is deleted "
        f"{age} after it was written (a timer checks every {every}, whether or not anyone uses the Space): your "
        f"upload at most {age} after your last result made from it. A request that is refused (queue full, image too "
        f"large, unreadable file) deletes its results folder at once; its upload goes with the timer. When the server "
        f"stops or restarts, the whole folder is deleted. To measure the verdict sooner, a 256×256 crop of a reduced copy "
        f"of your image is held in the server's memory (never written to disk) from your upload for {age}, dropped by the "
        f"same timer. Nothing is sent elsewhere, and no visitor's request removes another visitor's file."
    )


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} seconds" if seconds != 1 else "1 second"


# --------------------------------------------------------------------------- start-up and shutdown
def use_as_gradio_cache(workspace: Workspace) -> None:
    """Make the workspace Gradio's cache, before any ``gr.Blocks`` is built.

    Gradio reads ``GRADIO_TEMP_DIR`` when a block is created (``Block.GRADIO_CACHE``) and when a server
    starts (its upload folder): uploads, the PNGs it writes for image outputs and its copies of files
    then land in the workspace, and go with it. (Its video helpers read the variable at import;
    this page has no video.)
    """
    os.environ["GRADIO_TEMP_DIR"] = str(workspace.root)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workspace.root / "cached_examples")


def remove_orphans(parent: str | os.PathLike | None = None, prefix: str = Workspace.PREFIX) -> list[Path]:
    """Delete the workspaces that earlier Space processes left in ``parent`` (default: the system's temp
    folder) when they died without cleaning up; returns what was removed.

    Only folders named ``prefix*``, owned by this user, holding a workspace lock file that no living
    process holds (the kernel frees an ``flock`` when its process dies, even on ``kill -9``). A
    running Space's folder, a folder without the lock and every other file are left alone.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing can be told apart safely
        return []
    removed = []
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{prefix}*"):
        lock = folder / Workspace.LOCK_NAME
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid() or not lock.is_file():
                continue
            descriptor = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its Space is running
            os.close(descriptor)
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(descriptor)
        logger.info("removed %s, left by a Space process that stopped without cleaning up", folder.name)
        removed.append(folder)
    return removed


def install_cleanup(workspace: Workspace, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """On SIGTERM / SIGINT: delete the workspace (Gradio's cache included), then exit (128 + the signal's number).

    ``atexit`` alone is not enough: a Space is stopped with SIGTERM, which skips it; and Gradio's own
    clean-up at shutdown runs only on a graceful server stop and deletes files, not their folders.
    """

    def handler(signum: int, frame: Any) -> None:
        workspace.close()
        logger.info("signal %d: workspace %s removed", signum, workspace.root)
        sys.stdout.flush()
        os._exit(128 + signum)  # the server's threads would keep a plain sys.exit waiting

    for number in signals:
        signal.signal(number, handler)


class Sweeper:
    """A daemon thread that calls ``workspace.sweep(max_age_s)`` every ``every_s`` seconds: old files go
    on an idle server too, not when the next request happens to arrive."""

    def __init__(self, workspace: Workspace, max_age_s: float, every_s: float) -> None:
        self.workspace, self.max_age_s, self.every_s = workspace, max_age_s, every_s
        self.also: list[Callable[[], None]] = []  # what else goes with age, in memory (webapp.references)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastprotect-sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            for sweep in (lambda: self.workspace.sweep(self.max_age_s), *self.also):
                try:
                    sweep()
                except Exception:  # a sweep that fails once must not stop the next ones
                    logger.exception("sweeping failed (%s)", getattr(sweep, "__qualname__", sweep))


def guard(workspace: Workspace, limits: SpaceLimits, *, signals: bool = True) -> Sweeper:
    """Everything the Space does for its visitors' files, in the order ``main()`` needs it, before the
    page is built: remove orphans of crashed earlier runs, make the workspace Gradio's cache, delete
    it on SIGTERM / SIGINT, and start the timer."""
    remove_orphans(workspace.root.parent)
    use_as_gradio_cache(workspace)
    if signals:
        install_cleanup(workspace)
    return Sweeper(workspace, limits.workspace_max_age_s, limits.sweep_every_s).start()


# --------------------------------------------------------------------------- one result, stored once
def store_detail_views(outcome: ProtectOutcome, folder: Path) -> tuple[str, str]:
    """The perturbation and the map of ``outcome`` as one PNG each in the request's folder (Gradio would
    otherwise write them into its cache under a content hash, outside that folder). The slider's halves are
    written once by :func:`webapp.space.protect_upload`: the protected PNG itself when it fits the view, and a
    hard link to the upload as "before" when the browser shows that file as the protection saw it."""
    folder = Path(folder)
    return _save(outcome.perturbation_view, folder / "perturbation.png"), _save(outcome.lpips_map_view, folder / "map.png")


def _save(image: Image.Image, path: Path) -> str:
    # Written between the verdict and its display: the fastest PNG level (zlib 1), as the slider's views
    # (space.VIEW_COMPRESS_LEVEL): at 1024² the two pictures cost 0.27 CPU s instead of level 6's 0.48 (busy 2-core CPU).
    image.save(path, format="PNG", compress_level=VIEW_COMPRESS_LEVEL)
    return str(path)


