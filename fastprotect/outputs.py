"""Output names and whole-or-nothing writes, shared by ``python -m fastprotect`` and ``python -m fastprotect.cluster``.

Both commands name the output of an input file through :func:`output_names`, so the CLI and the
Ray job give every input the same name: ``<stem>_protected.png``, where the stem is the file name
made safe (:func:`fastprotect.images.safe_stem`: no control, bidi or format characters, none of
``<>:"|?*\\``), shortened with a digest of the whole name when long, and unique ignoring case.

Files are written under a hidden temporary name (:data:`TEMP_PREFIX`) in the destination's folder
and renamed into place, so a killed run never leaves a truncated file under a final name.

Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

OUTPUT_SUFFIX = "_protected.png"
TEMP_PREFIX = ".fastprotect-tmp-"  # hidden: folder listings (ours, Ray's, file managers') skip it
TEMP_SUFFIX = ".part"
# File systems allow 255 bytes a name (ext4, APFS, ZFS; NTFS 255 UTF-16 units). A stem above these
# bounds is cut and given "~<digest>", so "<stem>~xxxxxxxx_<n>_protected.png" stays far below 255
# and two long names that share their beginning still get different, stable outputs.
LONG_STEM_CHARS = 100
LONG_STEM_BYTES = 150
DIGEST_CHARS = 8
STALE_TEMP_SECONDS = 600.0  # one PNG is written in well under a second: an older temporary is a killed run's


def output_stem(file_name: str) -> str:
    """The stem of one input's output: ``safe_stem`` of the file name, a backslash kept as ``_``
    (on POSIX it is part of the name), and above ``LONG_STEM_CHARS`` characters or
    ``LONG_STEM_BYTES`` UTF-8 bytes cut (never inside a character cluster) and suffixed with
    ``~`` + the first ``DIGEST_CHARS`` hex digits of the whole name's SHA-256."""
    from .images import _cut, safe_stem  # _cut: safe_stem's own cluster-aware cut, reused rather than copied

    stem = safe_stem(file_name.replace("\\", "_"))
    if len(stem) <= LONG_STEM_CHARS and len(stem.encode("utf-8", "surrogatepass")) <= LONG_STEM_BYTES:
        return stem
    digest = hashlib.sha256(file_name.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_CHARS]  # any str, lone surrogates too
    room = DIGEST_CHARS + 1
    return f"{_cut(stem, LONG_STEM_CHARS - room, LONG_STEM_BYTES - room).rstrip('. ')}~{digest}"


def output_names(file_names: Sequence[str]) -> list[str]:
    """Output base names for input file names (no folders), in input order: ``<output_stem>_protected.png``,
    made unique ignoring case (``photo``, ``Photo_2``, …; ``unique_stem``).

    Names depend on the whole list, not on which inputs later succeed, so a rerun over the same
    inputs maps each to the same output (the Ray job's resume relies on it).
    """
    from .images import unique_stem

    used: set[str] = set()
    return [f"{unique_stem(output_stem(name), used)}{OUTPUT_SUFFIX}" for name in file_names]


def temporary_name() -> str:
    """A fresh hidden name for a file being written (fixed length: it never makes a long name too long)."""
    return f"{TEMP_PREFIX}{secrets.token_hex(12)}{TEMP_SUFFIX}"


def is_temporary_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


def write_atomically(destination: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``destination``, flush it to disk, rename it into place.

    On any exception (KeyboardInterrupt and SystemExit included) the temporary is removed and
    the error re-raised; a SIGKILL leaves only a hidden temporary (see ``remove_stale_temporaries``).
    The file gets the permissions of a plain ``open(..., "wb")`` (0666 less the umask).
    """
    temporary = destination.parent / temporary_name()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def remove_stale_temporaries(folder: Path, older_than_s: float = STALE_TEMP_SECONDS) -> int:
    """Delete temporaries an earlier, killed run left in ``folder``; how many. Fresh ones may belong
    to a run still writing into the same folder, so only those older than ``older_than_s`` go."""
    removed, now = 0, time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if is_temporary_name(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > older_than_s:
                        os.unlink(entry.path)
                        removed += 1
    return removed


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (created later if missing), or None.

    Walks up to the nearest existing folder and tries it for real, by creating and deleting a
    temporary file there: permission bits alone mislead (root, ACLs, read-only mounts).
    """
    if str(folder) == "":
        return "the path is empty"
    existing = folder
    while not os.path.lexists(existing):
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        return f"{str(existing)!r} is a broken symbolic link"
    if not existing.is_dir():
        return f"{str(existing)!r} is a file, not a folder" if existing.exists() else f"{str(existing)!r} does not exist"
    probe = existing / temporary_name()
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as error:
        return f"cannot create files in {str(existing)!r} ({error.strerror or type(error).__name__})"
    return None
