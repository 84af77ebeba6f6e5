"""The Space's file and model helpers (handlers are in :mod:`webapp.handlers`).

Loading the models once with a page-friendly outcome, the app's private temp space (every file
the Space serves is written below it, and old files are deleted), protecting one upload into a
downloadable PNG plus the pictures the page shows, and the batch ZIP with its per-file report.

Images cross these functions as PIL images or ``1×3×H×W`` float tensors in ``[0, 1]``.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fastprotect.images import ImageError, LoadedImage, load_image, save_png, to_pil, unique_stem
from fastprotect.vocabulary import (DEFAULT_ETA_LEVELS, MIMIC_FAMILY_OF_ENCODER, check_min_energy, check_refine_steps, check_target,
                                    eta_from_levels)

ProgressCallback = Callable[[float, str], None]
logger = logging.getLogger(__name__)

class SpaceInputError(ValueError):
    """A visitor's request that cannot be served (empty input, too many files); one readable line."""


@dataclass(frozen=True)
class ProtectOptions:
    """What a visitor chose. ``eta_levels``: the L∞ budget in 8-bit levels (1…MAX_ETA_LEVELS)."""

    eta_levels: int = DEFAULT_ETA_LEVELS
    target: str = "auto"
    adaptive_strength: bool = True
    refine_steps: int = 0
    seed: int = 0
    # the generator's minimum energy (RMS levels at η 8): None = the checkpoint's own (2.5 for the bundled generator;
    # a mixture has none), 0 = off
    min_energy: float | None = None

    def __post_init__(self) -> None:
        try:  # the library's own checks, so UI, API, library and CLI share one bound
            eta_from_levels(int(self.eta_levels))
            check_target(self.target)
            check_refine_steps(self.refine_steps)
            if self.min_energy is not None:
                check_min_energy(self.min_energy)
        except ValueError as error:
            raise SpaceInputError(str(error)) from None

    @property
    def eta(self) -> float:
        return eta_from_levels(int(self.eta_levels))


# ---------------------------------------------------------------------------------------------
# the app's temp space


class Workspace:
    """The Space's one private folder: every file of a visitor's lands below it, nothing elsewhere.

    ``python app.py`` also makes it Gradio's cache (``GRADIO_TEMP_DIR``, :mod:`webapp.privacy`), so
    uploads, results and Gradio's own copies share one folder, one timer and one ``rmtree``.
    Each request writes into its own sub-folder (:meth:`new_dir`, an unguessable name). An owner lock
    (``flock`` on :data:`LOCK_NAME`), held while this process lives and freed by the kernel when it
    dies, tells a restarted Space which earlier folders were left by a crashed process
    (:func:`webapp.privacy.remove_orphans`). ``sweep(max_age_s)`` deletes what is older than
    ``max_age_s``; ``close()`` (also run at interpreter exit) deletes the whole folder.
    """

    PREFIX = "fastprotect-space-"
    LOCK_NAME = ".owner.lock"
    KEPT = frozenset({"examples", "cached_examples", LOCK_NAME})  # the Space's own files, never swept

    def __init__(self, root: str | Path | None = None, *, prefix: str = PREFIX, parent: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = _hold_lock(self.root / self.LOCK_NAME)
        self.page_files: set[str] = set()  # what Gradio wrote while the page was built: never swept
        self.closed = False
        atexit.register(self.close)

    def new_dir(self, kind: str = "request") -> Path:
        """A fresh request folder; its name carries 128 random bits, as it may be served by path."""
        folder = self.root / f"{kind}-{secrets.token_hex(16)}"
        folder.mkdir(mode=0o700)
        return folder

    def keep_page_files(self) -> None:
        """Mark what is in the workspace now as the page's own (Gradio's copies of the target thumbnails,
        written while the page is built), so that the sweep leaves it: call once the page is built,
        before any visitor."""
        self.page_files = {child.name for child in self.root.iterdir()}

    def discard(self, folder: str | Path) -> None:
        """Delete one request folder of this workspace now (a refused or failed request's)."""
        folder = Path(folder)
        if folder.parent == self.root and folder.name not in self.KEPT | self.page_files:
            shutil.rmtree(folder, ignore_errors=True)

    def sweep(self, max_age_s: float) -> int:
        """Delete every entry (request folder, Gradio upload or output) whose newest file was written more
        than ``max_age_s`` ago, except :attr:`KEPT`; returns how many entries went."""
        cutoff, removed = time.time() - max_age_s, 0
        for child in list(self.root.iterdir()) if self.root.exists() else ():
            if child.name in self.KEPT or child.name in self.page_files:
                continue
            try:
                if _newest_mtime(child) >= cutoff:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            except FileNotFoundError:  # gone meanwhile (another sweep, Gradio's own clean-up)
                continue
            except OSError:
                logger.warning("could not remove %s", child.name)
                continue
            removed += 1
        return removed

    def close(self) -> None:
        """Delete the whole folder (idempotent). A request thread still writing may recreate a
        folder while the first pass runs, so a second pass follows."""
        self.closed = True
        for _ in range(2):
            shutil.rmtree(self.root, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` and of everything below it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, names, files in os.walk(path):
            for name in names + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except FileNotFoundError:
                    continue
    return newest


def _hold_lock(path: Path) -> int | None:
    """Open ``path`` and hold an exclusive ``flock`` on it for the life of this process (None where
    ``fcntl`` is missing: Windows, where orphans are then not recognised)."""
    try:
        import fcntl
    except ImportError:
        return None
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by child processes
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RuntimeError(f"the workspace {path.parent.name} is in use by another running Space") from None
    return descriptor


def safe_stem(name: str | None, default: str = "image") -> str:
    """A file-name stem safe to serve, in the user's script: see ``fastprotect.images.safe_stem``."""
    from fastprotect import images

    return images.safe_stem(name, default)


# ---------------------------------------------------------------------------------------------
# loading the models once


@dataclass
class LoadOutcome:
    """What start-up produced: a Protector, or None with a message the page shows instead."""

    protector: Any | None  # fastprotect.protect.Protector
    error: str | None = None
    seconds: float = 0.0
    details: dict[str, str] = field(default_factory=dict)


def family_of(protector: Any) -> str:
    """The mimic family the loaded protection targets: the checkpoint's ``mimic_base``; in
    per-image mode, the family of the encoder kind; FLUX.2 [klein] while nothing is loaded."""
    if protector is None:
        return "flux.2-klein"
    if protector.checkpoint_config is not None:
        return protector.checkpoint_config.mimic_base
    return MIMIC_FAMILY_OF_ENCODER.get(getattr(protector.autoencoder, "kind", "taef2"), "sd-1.5")


@dataclass(frozen=True)
class CheckpointFacts:
    """What the page's layout needs to know of the checkpoint, read from its config.json in milliseconds, so that
    the page can answer before the weights are loaded. ``min_energy``: "Lift flat images" (0 = the checkpoint has none)."""

    method: str = "per-image"  # generator, mixture or per-image
    target: str | None = None  # the generator's trained pattern
    min_energy: float = 0.0
    family: str = "flux.2-klein"  # the mimic family the checkpoint targets
    encoder_kind: str = "taef2"  # the autoencoder every number is measured with

    @classmethod
    def of(cls, protector: Any) -> CheckpointFacts:
        """The facts of a loaded Protector (tests build the page from one)."""
        generator = getattr(protector, "generator", None)
        config = getattr(protector, "checkpoint_config", None)
        return cls(method=getattr(protector, "method", "per-image"), target=generator.config.target if generator is not None else None,
                   min_energy=float(generator.config.fill_rms_levels) if generator is not None else 0.0,
                   family=config.mimic_base if config is not None else family_of(protector),
                   encoder_kind=getattr(getattr(protector, "autoencoder", None), "kind", cls.encoder_kind))

    @classmethod
    def read(cls, checkpoint: str | None = None) -> CheckpointFacts:
        """From the checkpoint's config.json (environment and bundle as ``Protector.from_pretrained``); the
        defaults when it cannot be read (the load then fails and says why)."""
        try:
            from fastprotect.sources import checkpoint_source, local_folder

            folder = local_folder(checkpoint_source(checkpoint).location)
            raw = json.loads((folder / "config.json").read_text()) if folder is not None else {}
        except Exception:  # the real load reports it, on the page
            return cls()
        method = raw.get("method", "mixture")
        return cls(method=method, target=raw.get("target") if method == "generator" else None,
                   min_energy=float(raw.get("fill_rms_levels") or 0.0) if method == "generator" else 0.0,
                   family=raw.get("mimic_base", cls.family), encoder_kind=raw.get("encoder_kind", cls.encoder_kind))


class BackgroundLoad:
    """The models, loaded in a thread started at once, so that the page answers while they load (a request
    waits for them: :meth:`wait`). ``facts`` come from the checkpoint's config and are ready immediately."""

    def __init__(self, load: Callable[[], LoadOutcome], facts: CheckpointFacts) -> None:
        self.facts = facts
        self._outcome: LoadOutcome | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(load,), name="fastprotect-load", daemon=True)
        self._thread.start()

    def _run(self, load: Callable[[], LoadOutcome]) -> None:
        try:
            self._outcome = load()
        except Exception as error:  # load_space_protector never raises; anything else still reaches the page
            self._outcome = LoadOutcome(None, f"{type(error).__name__}: {error}")
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = 300.0) -> LoadOutcome | None:
        """The outcome once loaded; None when ``timeout`` seconds pass first."""
        self._done.wait(timeout)
        return self._outcome


def load_space_protector(**options: Any) -> LoadOutcome:
    """``Protector.from_pretrained(**options)`` (environment variables apply), never raising.

    Missing weights (offline, wrong id, empty folder) and malformed checkpoints give a LoadOutcome
    with ``protector=None`` and a one-paragraph ``error`` for the page (file paths in it replaced by their names).
    """
    start = time.perf_counter()
    try:
        from fastprotect.protect import Protector

        protector = Protector.from_pretrained(**options)
    except Exception as error:  # start-up must survive anything: the page explains instead
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return LoadOutcome(None, without_paths(f"{type(error).__name__}: {message}"), time.perf_counter() - start)
    from fastprotect.sources import checkpoint_source

    checkpoint = checkpoint_source(options.get("checkpoint")).location
    # A folder's name, never the server's path; a Hub id as it is.
    details = {"checkpoint": Path(checkpoint).name if Path(checkpoint).exists() else checkpoint}
    if protector.mode == "per-image":
        details["checkpoint"] = "none (per-image mode)"
    return LoadOutcome(protector, None, time.perf_counter() - start, details)


def without_paths(text: str) -> str:
    """``text`` with every absolute file path replaced by its last part: a page never shows where the server keeps files."""
    return re.sub(r"(?<![\w:])/(?:[^\s/'\"`]+/)+([^\s/'\"`]+)", r"\1", text)


def describe_protector(protector: Any, details: dict[str, str] | None = None) -> dict[str, str]:
    """Which checkpoint, encoder and LPIPS model are loaded, as short strings for the About tab."""
    autoencoder = protector.autoencoder
    mixture = protector.mixture
    described = {
        "mode": protector.mode,
        "method": protector.method,
        # the encoder's kind and where it came from by name only: a local folder's path is the server's business
        "encoder": f"{getattr(autoencoder, 'kind', type(autoencoder).__name__)} from {_source_name(getattr(autoencoder, 'source', 'memory'))}",
        "LPIPS": type(protector.perceptual).__name__ if protector.perceptual is not None else "not loaded (adaptive strength off)",
        "device": str(protector.device),
    }
    if mixture is not None:
        config = mixture.config
        described["mixture"] = (
            f"{config.num_targets} targets × {config.num_groups} groups, {config.size}² perturbations, "
            f"trained at η = {config.eta * 255:.0f}/255 against {config.encoder_kind}"
        )
    generator = getattr(protector, "generator", None)
    if generator is not None:
        config = generator.config
        described["generator"] = (
            f"{generator.parameter_count():,} parameters, texture budget (full at local contrast {config.contrast_reference:g}, "
            f"floor {config.mask_floor:g}), RMS cap {config.rms_levels:g} levels, trained at η = {config.eta * 255:.0f}/255 "
            f"against {config.encoder_kind}"
        )
    described.update(details or {})
    return described


def _source_name(source: Any) -> str:
    """A Hub id as it is; a local folder by its name only."""
    text = str(source)
    return Path(text).name if text.startswith(("/", "~", ".")) or Path(text).exists() else text


# ---------------------------------------------------------------------------------------------
# one image


# The page's own copies (the slider's halves) are written fast: they are viewed once and swept with the result.
VIEW_COMPRESS_LEVEL = 1


@dataclass
class ProtectOutcome:
    """One protected upload: the PNG on disk and what the page shows. The pictures for Details are made only
    when asked for (after the protected image is on the page)."""

    png_path: Path
    view_paths: tuple[Path, Path]  # the slider's halves: clean and protected, the same size (long side ≤ the view size)
    info: dict[str, Any]
    loaded: LoadedImage = field(repr=False)
    protected_pixels: torch.Tensor = field(repr=False)  # 1×3×H×W uint8 levels (the loaded image is levels too)
    result: Any = field(repr=False)  # fastprotect.protect.ProtectionResult
    eta: float = 8 / 255
    view_max_side: int = 1536  # the Details pictures' long side at most (every k-th pixel of larger images)

    @property
    def view_stride(self) -> int:
        """k: the Details pictures show every k-th pixel of every k-th row, so that their long side fits the view.
        Not an average: that would blur δ's pattern to grey. At 24 MP the full-size pictures cost 4.5 s of PNG
        writing and 1.4 GB of float temporaries for pictures a browser shows at 1/4 of their size."""
        return max(1, math.ceil(max(self.result.image.shape[-2:]) / self.view_max_side))

    @property
    def perturbation_view(self) -> Image.Image:
        """RGB, δ amplified so that ±η spans black…white (δ's own values at the sampled pixels)."""
        return perturbation_view(self.result.sampled_perturbation(self.view_stride), self.eta)

    @property
    def lpips_map_view(self) -> Image.Image:
        """RGB heat map: the visibility map (mixture), the texture budget (generator); flat grey without either.
        Never None: Gradio's lazily cached examples cannot read back an empty image output."""
        k, result = self.view_stride, self.result
        if result.lpips_map is not None:
            return heat_map(result.lpips_map[..., ::k, ::k])
        return heat_map(result.budget_map[..., ::k, ::k]) if result.budget_map is not None else _no_map(result.image)


def protect_upload(
    protector: Any,
    source: str | os.PathLike | bytes | Image.Image,
    options: ProtectOptions,
    output_dir: str | Path,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    progress: ProgressCallback | None = None,
    compute_metrics: bool = True,
    view_max_side: int = 1536,
    upload: str | os.PathLike | None = None,
) -> ProtectOutcome:
    """Load, protect and save one image as ``<name>_protected_eta<levels>.png`` in ``output_dir``, with the two
    halves of the before/after view beside it (the same size, so that they line up pixel for pixel).

    ``compute_metrics=False``: no full-image PSNR/SSIM/LPIPS (the Space measures each result once, with its verdict).
    ``upload``: the visitor's file; the "before" half is a hard link to it when a browser shows it as it is (no bytes
    copied, and deleting the link never touches the upload, which another visitor may share).
    Raises :class:`ImageError` (bad file) or :class:`SpaceInputError` (bad options), both with a one-line message.
    """
    # 8-bit levels, as the CLI: a quarter of a float image's memory at full size (24 MP: 72 MB, not 288 MB), the
    # same protected pixels (tests/test_protect.py); views, verdict and PNG writer read levels as they are.
    loaded = load_image(source, max_pixels=max_pixels, name=name, levels=True)
    result = protector.protect(
        loaded, eta=options.eta, target=options.target, adaptive_strength=options.adaptive_strength,
        refine_steps=int(options.refine_steps), seed=int(options.seed), progress=progress,
        min_energy=options.min_energy, compute_metrics=compute_metrics,
    )
    path = Path(output_dir) / output_name(loaded.name, options)
    save_png(loaded, result.image, path)
    clean_view = link_upload(Path(upload), Path(output_dir), view_max_side, (loaded.width, loaded.height)) if upload is not None else None
    if clean_view is None:
        clean_view = Path(output_dir) / "view_clean.png"
        fit_view(to_pil(loaded, loaded.pixels), view_max_side).save(clean_view, compress_level=VIEW_COMPRESS_LEVEL)
    if max(loaded.width, loaded.height) <= view_max_side:
        protected_view = path  # the download itself: no second copy of the same pixels
    else:
        protected_view = Path(output_dir) / "view_protected.png"
        fit_view(to_pil(loaded, result.image), view_max_side).save(protected_view, compress_level=VIEW_COMPRESS_LEVEL)
    return ProtectOutcome(png_path=path, view_paths=(clean_view, protected_view), info=_json_safe(result.info.as_dict()),
                          loaded=loaded, protected_pixels=result.image, result=result, eta=options.eta, view_max_side=view_max_side)


# What a browser shows as it is: the slider's "before" may then be the upload itself (a hard link).
BROWSER_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})


def link_into(source: str | os.PathLike, folder: Path, stem: str) -> Path | None:
    """``folder/<stem><source's suffix>`` as a hard link to ``source`` (the request keeps the upload's bytes
    without copying them, and deleting its folder never touches the upload); None when the file system
    cannot link."""
    return _link_as(Path(source), Path(folder) / f"{stem}{Path(source).suffix.lower()}")


def link_upload(upload: Path, folder: Path, max_side: int, size: tuple[int, int]) -> Path | None:
    """A hard link ``folder/before.<ext>`` to the upload, or None when the browser would not show the
    upload exactly as the protection saw it (another format, EXIF-rotated, another size) or the file
    system cannot link."""
    try:
        with Image.open(upload) as image:
            orientation = image.getexif().get(0x0112, 1)
            usable = (image.format in BROWSER_FORMATS and orientation == 1 and image.size == size
                      and max(image.size) <= max_side and image.mode in ("RGB", "RGBA", "L", "LA", "P"))
            suffix = {"JPEG": ".jpg"}.get(image.format, f".{str(image.format).lower()}")
    except Exception:  # unreadable here: the protection would have failed before
        return None
    if not usable:
        return None
    return _link_as(upload, folder / f"before{suffix}")


def _link_as(source: Path, link: Path) -> Path | None:
    try:
        os.link(source, link)
    except OSError:  # another file system, or links not allowed
        return None
    return link  # named by the upload's real format, which the browser is served by


def output_name(name: str | None, options: ProtectOptions) -> str:
    """The download's file name: the upload's own stem plus the settings, ``<name>_protected_eta8.png``
    (``…_eta8_unlifted.png`` with the generator's minimum energy turned off)."""
    unlifted = "_unlifted" if options.min_energy == 0 else ""
    return f"{safe_stem(name)}_protected_eta{int(options.eta_levels)}{unlifted}.png"


def header_size(path: str | os.PathLike) -> tuple[int, int, bool] | None:
    """(width, height, has alpha) from the file's header without decoding it; None when unreadable."""
    try:
        with Image.open(path) as image:
            return image.width, image.height, "A" in image.getbands() or "transparency" in image.info
    except Exception:  # an unreadable file is reported by the loader, with its reason
        return None


def estimated_bytes(width: int, height: int, alpha: bool) -> int:
    """A generous upper bound on what protecting one image writes: the PNG (≈ raw size at worst)
    plus the page's copies (at most as large again)."""
    return 2 * width * height * (4 if alpha else 3) + 1_000_000


def fit_view(image: Image.Image, max_side: int) -> Image.Image:
    """A copy whose long side is at most ``max_side`` (the image itself when it fits)."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS)


def _json_safe(value: Any) -> Any:
    """NaN/inf floats -> None, rounded floats, recursively: the info record as JSON."""
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """``1×3×H×W`` or ``3×H×W`` in [0, 1] -> 8-bit RGB."""
    pixels = image.reshape(-1, *image.shape[-3:])[0].detach().float().cpu().clamp(0, 1)
    return Image.fromarray((pixels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())


def perturbation_view(perturbation: torch.Tensor, eta: float) -> Image.Image:
    """δ (``1×3×H×W``, within ±η) amplified for the eye: −η → black, 0 → grey, +η → white."""
    return tensor_to_pil(0.5 + perturbation / (2 * eta))


def _no_map(image: torch.Tensor) -> Image.Image:
    """Flat grey in place of the visibility map when no LPIPS model is loaded (the info says why)."""
    height, width = image.shape[-2:]
    scale = min(1.0, 512 / max(height, width))
    return Image.new("RGB", (max(1, round(width * scale)), max(1, round(height * scale))), (128, 128, 128))


def heat_map(values: torch.Tensor) -> Image.Image:
    """A ``1×1×H×W`` map -> RGB heat map (dark blue = low … yellow = high), min-max normalised."""
    flat = values.detach().float().cpu()[0, 0]
    low, high = float(flat.min()), float(flat.max())
    t = ((flat - low) / (high - low)) if high > low else torch.zeros_like(flat)
    # A three-stop ramp (navy -> magenta -> yellow), readable and colour-blind friendly enough.
    red = (t * 2).clamp(0, 1)
    green = (t * 2 - 1).clamp(0, 1)
    blue = 0.45 + 0.35 * torch.sin(math.pi * t) - 0.45 * (t * 2 - 1).clamp(0, 1)
    return tensor_to_pil(torch.stack([red, green, blue.clamp(0, 1)]))


# ---------------------------------------------------------------------------------------------
# batch


@dataclass
class BatchOutcome:
    zip_path: Path
    rows: list[dict[str, Any]]  # one per input file, in order: file, status, ... (see REPORT_FIELDS)
    protected: list[tuple[Path, Path]]  # (clean source, protected PNG) for every good file

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] != "ok"]


REPORT_FIELDS = ("file", "status", "output", "width", "height", "target", "linf_levels", "psnr_db", "lpips", "seconds", "message")


def protect_batch(
    protector: Any,
    files: Sequence[tuple[str | Path, str]],
    options: ProtectOptions,
    output_dir: str | Path,
    *,
    max_files: int,
    max_pixels: int | None = None,
    progress: ProgressCallback | None = None,
) -> BatchOutcome:
    """Protect ``files`` ((path, display name) pairs) into ``output_dir/protected.zip``.

    Bad files are listed in the report (``status`` "error" with the reason) and skipped; good ones
    are kept. The ZIP holds one ``<name>_protected_eta<levels>.png`` per good file plus ``report.csv`` and
    ``report.json``. Raises :class:`SpaceInputError` for no files or more than ``max_files``.
    """
    if not files:
        raise SpaceInputError("no files given: upload one or more images")
    if len(files) > max_files:
        raise SpaceInputError(f"{len(files)} files given; at most {max_files} per batch")
    output_dir = Path(output_dir)
    images_dir = output_dir / "protected"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    protected: list[tuple[Path, Path]] = []
    used: set[str] = set()
    for index, (path, display) in enumerate(files):
        if progress is not None:
            progress(index / len(files), f"{display} ({index + 1}/{len(files)})")
        row: dict[str, Any] = dict.fromkeys(REPORT_FIELDS, None) | {"file": display}
        start = time.perf_counter()
        try:
            name = unique_stem(safe_stem(display), used)
            outcome = protect_upload(protector, path, options, images_dir, name=name, max_pixels=max_pixels)
        except ImageError as error:
            row.update(status="error", message=str(error))
        except Exception as error:  # a library failure on one file must not cost the others
            logger.exception("protecting %r failed", display)
            row.update(status="error", message=f"protection failed ({type(error).__name__}); the file was skipped")
        else:
            info = outcome.info
            row.update(
                status="ok", output=outcome.png_path.name, width=info["width"], height=info["height"], target=info["target"],
                linf_levels=info["linf_levels"], psnr_db=info["psnr_db"], lpips=info["lpips"], message="; ".join(info["notes"]),
            )
            protected.append((Path(path), outcome.png_path))
        row["seconds"] = round(time.perf_counter() - start, 3)
        rows.append(row)
    zip_path = output_dir / "protected.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for _, png in protected:
            archive.write(png, png.name)
        archive.writestr("report.csv", report_csv(rows))
        archive.writestr("report.json", json.dumps(rows, indent=2, ensure_ascii=False))
    if progress is not None:
        progress(1.0, "done")
    return BatchOutcome(zip_path, rows, protected)


def report_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def report_table(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Rows for a ``gr.Dataframe`` with headers :data:`REPORT_FIELDS`."""
    return [[row.get(key) for key in REPORT_FIELDS] for row in rows]


# ---------------------------------------------------------------------------------------------
# GPU


def gpu_decorator(duration: int) -> Callable[[Callable], Callable]:
    """``spaces.GPU(duration=...)`` on Hugging Face (ZeroGPU) when ``spaces`` imports, else a no-op."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda function: function
    return spaces.GPU(duration=duration)


def uploaded_path(payload: Any) -> tuple[str, str] | None:
    """(server path, original file name) of a Gradio file payload (dict, FileData, str), or None."""
    if payload is None:
        return None
    if isinstance(payload, (str, os.PathLike)):
        return str(payload), Path(payload).name
    if isinstance(payload, dict):
        path, name = payload.get("path"), payload.get("orig_name")
    else:
        path, name = getattr(payload, "path", None), getattr(payload, "orig_name", None)
    if not path:
        return None
    return str(path), str(name or Path(str(path)).name)
