"""The pieces of ``python -m fastprotect.cluster`` that do not need Ray: file systems, the plan, the worker, the report.

Inputs and outputs live on any file system pyarrow understands (a local folder, ``s3://``,
``gs://``, ``hdfs://``) or, through fsspec, any fsspec URI. The driver lists the inputs once,
gives each its CLI output name (``fastprotect.outputs.output_names``, made unique in listing order) and drops
those whose output already exists; Ray actors (:class:`ProtectWorker`) load the Protector once and
turn each remaining row into a PNG plus one report row. Every PNG is written under a hidden
temporary name and renamed into place, so an output either exists complete or not at all.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from .outputs import is_temporary_name, output_names, temporary_name
from .vocabulary import is_image_name

if TYPE_CHECKING:
    import pyarrow
    import pyarrow.fs

    from .protect import Protector

REPORT_STEM = "report"
STATUS_OK, STATUS_FAILED, STATUS_EXISTS = "ok", "failed", "exists"
REPORT_FIELDS = ("path", "output", "status", "reason", "target", "group", "linf_levels", "lpips", "seconds")


@dataclass(frozen=True)
class ProtectSettings:
    """The CLI's protection settings. ``eta_levels`` in 8-bit levels (1–32); ``device`` "cpu", "cuda", "cuda:N"."""

    eta_levels: float = 8.0
    target: str = "auto"
    adaptive_strength: bool = True
    refine_steps: int = 0
    seed: int = 0
    checkpoint: str | None = None
    per_image: bool = False
    encoder_kind: str | None = None
    encoder_source: str | None = None
    lpips_backbone: str | None = None
    device: str = "cpu"
    half: bool = False
    max_pixels: int | None = None
    min_energy: float | None = None  # generator only: RMS levels at η 8 below which an image's floor is raised


def load_protector(settings: ProtectSettings) -> "Protector":
    """``Protector.from_pretrained`` exactly as the CLI calls it, so outputs match the CLI's."""
    import torch

    from .protect import Protector

    return Protector.from_pretrained(
        settings.checkpoint, per_image=settings.per_image, encoder_kind=settings.encoder_kind,
        encoder_source=settings.encoder_source, lpips_backbone=settings.lpips_backbone, device=settings.device,
        dtype=torch.float16 if settings.half else torch.float32, min_energy=settings.min_energy,
    )


# ------------------------------------------------------------------------------ file systems
def resolve(uri: str) -> tuple["pyarrow.fs.FileSystem", str]:
    """A local path or URI -> (pyarrow file system, path inside it). Raises ValueError when unknown.

    pyarrow handles local paths, ``file://``, ``s3://``, ``gs://`` and ``hdfs://``; any other
    scheme goes through fsspec (``az://``, ``memory://``, ...) when fsspec knows it.
    """
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as arrow_error:  # pyarrow: ArrowInvalid for schemes it lacks
        try:
            import fsspec

            filesystem, path = fsspec.core.url_to_fs(uri)
        except Exception:
            raise ValueError(f"cannot open {uri!r}: {arrow_error}") from None
        return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path


def list_inputs(filesystem: "pyarrow.fs.FileSystem", root: str, *, recursive: bool, all_files: bool) -> list[str]:
    """Sorted file paths under ``root`` (or ``root`` itself when it is a file).

    Like the CLI, a folder gives files with an image suffix; ``all_files`` takes every file so
    that a stray non-image gets a report row. Hidden names ("." or "_" first, as Ray skips them)
    never count. Raises FileNotFoundError when ``root`` does not exist.
    """
    import pyarrow.fs as pafs

    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.File:
        return [root]
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"input not found: {root}")
    entries = filesystem.get_file_info(pafs.FileSelector(root, recursive=recursive))
    files = []
    for entry in entries:
        relative = PurePosixPath(entry.path[len(root.rstrip("/")) + 1:])
        if entry.type != pafs.FileType.File or any(part.startswith((".", "_")) for part in relative.parts):
            continue
        if all_files or is_image_name(relative.name):
            files.append(entry.path)
    return sorted(files)


def existing_names(filesystem: "pyarrow.fs.FileSystem", folder: str) -> set[str]:
    """Base names of the files directly in ``folder`` (empty when it does not exist yet)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(folder, allow_not_found=True)
    return {PurePosixPath(e.path).name for e in filesystem.get_file_info(selector) if e.type == pafs.FileType.File}


def remove_stale_temporaries(filesystem: "pyarrow.fs.FileSystem", folder: str, names: set[str]) -> int:
    """Delete half-written outputs a killed job left behind; how many. One job per output folder at a time."""
    stale = [name for name in names if is_temporary_name(name)]
    for name in stale:
        filesystem.delete_file(f"{folder}/{name}")
    return len(stale)


def plan_outputs(paths: Sequence[str]) -> list[str]:
    """Output base names in input order, by the CLI's own rule (:func:`fastprotect.outputs.output_names`):
    ``<safe stem>_protected.png``, long stems shortened with a digest, unique ignoring case.

    Names come from the listing, not from which files succeed, so a rerun maps every input to
    the same output, and they equal the CLI's for the same inputs in the same order.
    """
    return output_names([PurePosixPath(path).name for path in paths])


def check_writable(filesystem: "pyarrow.fs.FileSystem", folder: str) -> None:
    """Write and delete a small file in ``folder``, so a read-only place or missing credentials
    stop the job at its start (raises OSError) instead of failing every row and the report."""
    probe = f"{folder}/{temporary_name()}"
    atomic_write(filesystem, probe, b"fastprotect write check\n")
    filesystem.delete_file(probe)


def atomic_write(filesystem: "pyarrow.fs.FileSystem", destination: str, data: bytes) -> None:
    """Write ``data`` under a hidden temporary name in the same folder, then rename it into place.

    A job killed mid-write leaves only a temporary (removed by the next run), never a truncated
    output. Local renames are atomic; object stores create the object in one PUT either way.
    """
    folder = destination.rsplit("/", 1)[0]
    temporary = f"{folder}/{temporary_name()}"  # fixed length: a long output name still fits in 255 bytes
    try:
        with filesystem.open_output_stream(temporary) as stream:
            stream.write(data)
        filesystem.move(temporary, destination)
    except BaseException:
        try:
            filesystem.delete_file(temporary)
        except Exception:  # it may never have been created
            pass
        raise


# ------------------------------------------------------------------------------ report rows
def report_row(path: str, output: str, status: str, reason: str | None = None, **values: Any) -> dict[str, Any]:
    """One report row with every field of ``REPORT_FIELDS`` (missing ones None)."""
    row = dict.fromkeys(REPORT_FIELDS)
    row.update(path=path, output=output, status=status, reason=reason, **values)
    return row


def report_schema() -> "pyarrow.Schema":
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("output", pa.string()), ("status", pa.string()), ("reason", pa.string()),
        ("target", pa.string()), ("group", pa.int64()), ("linf_levels", pa.int64()), ("lpips", pa.float64()),
        ("seconds", pa.float64()),
    ])


def one_line(error: BaseException) -> str:
    """An error as one readable line (the CLI's convention), with its type when it has no message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def write_report(filesystem: "pyarrow.fs.FileSystem", folder: str, rows: list[dict[str, Any]]) -> list[str]:
    """``report.parquet`` and ``report.json`` (one record per input, input order) in ``folder``; their paths."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=report_schema())
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    parquet, records = f"{folder}/{REPORT_STEM}.parquet", f"{folder}/{REPORT_STEM}.json"
    atomic_write(filesystem, parquet, sink.getvalue().to_pybytes())
    atomic_write(filesystem, records, (json.dumps(rows, indent=1, default=str) + "\n").encode())
    return [parquet, records]


# ------------------------------------------------------------------------------ the actor
class ProtectWorker:
    """Ray Data actor: loads the Protector once, then protects batches of ``{path, output}`` rows.

    ``factory`` builds the Protector (default :func:`load_protector`; tests pass tiny models).
    ``threads`` is the torch thread count: the CPUs Ray reserved for this actor. Any error on one
    file becomes a ``failed`` row; only a dying process (out of memory, segfault) restarts the actor.
    """

    def __init__(self, settings: ProtectSettings, input_fs: "pyarrow.fs.FileSystem", output_fs: "pyarrow.fs.FileSystem",
                 factory: Callable[[], "Protector"] | None = None, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.settings, self.input_fs, self.output_fs = settings, input_fs, output_fs
        self.protector = factory() if factory is not None else load_protector(settings)

    def __call__(self, batch: "pyarrow.Table") -> "pyarrow.Table":
        import pyarrow as pa

        rows = [self.protect_one(row["path"], row["output"]) for row in batch.to_pylist()]
        return pa.Table.from_pylist(rows, schema=report_schema())

    def protect_one(self, path: str, output: str) -> dict[str, Any]:
        """Read, protect and write one file; its report row. Skips outputs a retried batch already wrote."""
        import pyarrow.fs as pafs

        from .images import load_image, png_bytes

        start = time.perf_counter()
        try:
            if self.output_fs.get_file_info(output).type == pafs.FileType.File:
                return report_row(path, output, STATUS_EXISTS, "output already exists")
            with self.input_fs.open_input_file(path) as stream:
                data = io.BytesIO(stream.read())
            data.name = PurePosixPath(path).name  # so refusals name the file, as the CLI's do
            loaded = load_image(data, max_pixels=self.settings.max_pixels)
            s = self.settings
            result = self.protector.protect(loaded, eta=s.eta_levels / 255, target=s.target, adaptive_strength=s.adaptive_strength,
                                            refine_steps=s.refine_steps, seed=s.seed)
            atomic_write(self.output_fs, output, png_bytes(loaded, result.image))
        except Exception as error:  # one bad file is a report row, never a failed job
            return report_row(path, output, STATUS_FAILED, one_line(error), seconds=time.perf_counter() - start)
        info = result.info
        return report_row(path, output, STATUS_OK, target=info.target, group=info.group, linf_levels=info.linf_levels,
                          lpips=info.lpips, seconds=time.perf_counter() - start)
