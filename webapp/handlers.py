"""The Space's request handlers, as plain functions of a typed :class:`SpaceContext`.

``app.py`` wires them to the page (it adds Gradio's progress bar and turns :class:`VisitorError`
into a short message); tests call them directly with a dummy Protector, no server. Every handler
returns a NamedTuple in the order of the page's outputs.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image

from fastprotect.images import ImageError, load_image
from fastprotect.protect import Protector
from fastprotect.verdict import VISIBILITY_SCALE, Verdict, clean_reference, quick_verdict
from fastprotect.vocabulary import (AUTOENCODER_DISPLAY_NAMES, DEFAULT_ETA_LEVELS, MAX_ETA_LEVELS, MAX_REFINE_STEPS,
                                    MIMIC_DISPLAY_NAMES)

from . import privacy, space, views
from .limits import SpaceLimits
from .references import CleanReferences

logger = logging.getLogger("fastprotect.app")
Progress = Callable[[float, str], None]

# The strength presets, with what the evaluation measured for each η (docs/EVALUATION_HISTORY.md, "The default method against every reference (issue 10's protocol)";
# benchmarks/results/noise_control_cpu_taef2.json, rows "generator η 4/8/12"): mean LPIPS-alex of the bundled
# generator on 16 held-out images at 256², against TAEF2.
PRESETS: tuple[tuple[str, int, float], ...] = (("Light", 4, 0.014), ("Standard", 8, 0.057), ("Strong", 12, 0.110))
PRESET_SOURCE = "average over 16 test images with the bundled model; see Details for the terms"


TIMING_MEANINGS = {
    "total": "the protection itself (all the stages above)",
    "until shown": "from your click's arrival to the protected image on the page",
    "verdict": "the visibility and strength readout at the top, measured after the image was shown",
    "pictures": "writing the perturbation and map pictures below, before the verdict is sent",
}


METHOD_WORDS = {
    "generator": "generator (one forward pass, texture budget; the default)",
    "mixture": "mixture of perturbations (the paper's method)",
    "per-image": "per-image PGD (no pre-trained checkpoint)",
}


class VisitorError(Exception):
    """A request that cannot be served, with one line that says why (shown on the page)."""


def family_name(family: str) -> str:
    return MIMIC_DISPLAY_NAMES.get(family, family)


def autoencoder_name(protector: Protector | None) -> str:
    kind = getattr(protector.autoencoder, "kind", None) if protector is not None else None
    return AUTOENCODER_DISPLAY_NAMES.get(kind, f"the protector's own autoencoder ({kind or 'none'})")


def flat_min_energy(protector: Protector | None) -> float:
    """"Lift flat images": the loaded generator's own minimum energy (RMS levels at η 8; its checkpoint's
    ``fill_rms_levels``), 0 when it has none or the protector is not a generator. Never a copy of the number here."""
    generator = getattr(protector, "generator", None)
    return float(generator.config.fill_rms_levels) if generator is not None else 0.0


def whole_number(value: Any, what: str, low: int, high: int) -> int:
    """A visitor's number as an int in [low, high], or one sentence: 2.5 is refused, never run as 2."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VisitorError(f"{what} must be a whole number from {low} to {high}; got {value!r}.") from None
    if not number.is_integer() or not low <= number <= high:
        raise VisitorError(f"{what} must be a whole number from {low} to {high}; got {value!r}.")
    return int(number)


def options(eta_levels: Any, target: Any, adaptive: Any, refine_steps: Any, lift_flat: Any = None) -> space.ProtectOptions:
    """The visitor's choices, validated (one sentence per mistake). ``lift_flat``: True or None = the checkpoint's own
    minimum energy, False = off (0)."""
    levels = whole_number(eta_levels, "The strength η (in levels of 255)", 1, MAX_ETA_LEVELS)
    steps = whole_number(0 if refine_steps is None else refine_steps, "Refine steps", 0, MAX_REFINE_STEPS)
    try:
        return space.ProtectOptions(levels, str(target), bool(adaptive), steps, min_energy=None if lift_flat is None or lift_flat else 0.0)
    except (TypeError, ValueError) as error:
        raise VisitorError(f"{str(error)[:1].upper()}{str(error)[1:]}.") from None


def chosen_for(ctx: SpaceContext, eta_levels: Any, target: Any, adaptive: Any, refine_steps: Any,
               lift_flat: Any) -> tuple[space.ProtectOptions, Protector]:
    """The validated options and the loaded protector, or one line: "Lift flat images" is the
    generator's (the Protect and Batch tabs ask the same). Not given (None): on with the generator."""
    model = ctx.need_protector()
    if model.generator is None:
        if lift_flat:
            raise VisitorError(f"'Lift flat images' needs the generator; this Space runs the {model.method}.")
        lift_flat = None  # nothing to turn off: a mixture has no minimum energy
    return options(eta_levels, target, adaptive, refine_steps, lift_flat), model


# ------------------------------------------------------------------------- what the page shows now
@dataclass
class PageNow:
    """One browser session's Protect tab as it is now: the image in the box and the settings chosen."""

    upload: str | None = None
    settings: str | None = None


class Sessions:
    """What each browser session's Protect tab shows now, kept by the server (a result's own inputs are a
    snapshot from its click; this is the live page). A result that finishes after its image was replaced is
    not shown beside the new one. At most ``capacity`` sessions are remembered (oldest forgotten)."""

    def __init__(self, capacity: int = 2000) -> None:
        self._now: OrderedDict[str, PageNow] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def update(self, session: str | None, **changes: str | None) -> None:
        if not session:
            return
        with self._lock:
            now = self._now.pop(session, None) or PageNow()
            for key, value in changes.items():
                setattr(now, key, value)
            self._now[session] = now
            while len(self._now) > self.capacity:
                self._now.popitem(last=False)

    def now(self, session: str | None) -> PageNow | None:
        with self._lock:
            return self._now.get(session) if session else None


@dataclass
class SpaceContext:
    """What the handlers share: the loaded protector (or why there is none), the workspace, the
    limits, and the mimic for the proof tabs (None on a CPU). ``loaded`` may be a :class:`space.BackgroundLoad`
    (the page answers while the models load); a request then waits for it."""

    loaded: space.LoadOutcome | space.BackgroundLoad
    workspace: space.Workspace
    limits: SpaceLimits = field(default_factory=SpaceLimits)
    mimic: Any | None = None  # attack.mimic.Mimic, loaded once at start-up on a GPU
    sessions: Sessions = field(default_factory=Sessions)
    references: CleanReferences | None = None  # the verdict's clean half per upload (None: made from the limits)

    def __post_init__(self) -> None:
        if self.references is None:
            self.references = CleanReferences(max_age_s=self.limits.workspace_max_age_s)

    @property
    def outcome(self) -> space.LoadOutcome:
        if isinstance(self.loaded, space.BackgroundLoad):
            outcome = self.loaded.wait()
            if outcome is None:
                raise VisitorError("The protection model is still loading; please press the button again in a few seconds.")
            return outcome
        return self.loaded

    @property
    def protector(self) -> Protector | None:
        return self.outcome.protector

    @property
    def family(self) -> str:
        if self.mimic is not None:
            return self.mimic.family
        return self.loaded.facts.family if isinstance(self.loaded, space.BackgroundLoad) else space.family_of(self.protector)

    @property
    def attacks_on(self) -> bool:
        return self.mimic is not None

    def need_protector(self) -> Protector:
        if self.protector is None:
            raise VisitorError(f"Protection is unavailable: the models could not be loaded. {self.outcome.error}")
        return self.protector


# ------------------------------------------------------------------------------ protect one
class ProtectOutputs(NamedTuple):
    verdict: str  # Markdown: one line in plain words
    png: str | None  # the download, full resolution
    before_after: tuple[str, str] | None  # image files in the request's folder, the same size (space.protect_upload)
    details: str  # Markdown: each number with a one-line meaning
    perturbation: str | None
    lpips_map: str | None
    info: dict[str, Any] | None
    last: dict[str, Any] | None  # what this result was made from and measured as (gr.State): the mimic tab's source


READY_HINT = "Choose a strength and press **Protect**."
MEASURING = "Measuring how visible and how strong it is…"
STALE_IMAGE = "The image changed while the previous one was being protected: press **Protect** for this one."


def reset_outputs(message: str = READY_HINT) -> ProtectOutputs:
    """What a new upload or a cleared input shows: nothing from the previous image."""
    return ProtectOutputs(message, None, None, "", None, None, None, None)


def preset_label(levels: int) -> str:
    """A strength in plain words: the preset's name, or the budget as a fraction of 255."""
    for name, preset, _ in PRESETS:
        if preset == levels:
            return f"{name} strength"
    return f"strength {levels}/255"


def settings_label(chosen: space.ProtectOptions, model: Protector) -> str:
    """The settings a result was made with, naming only those that changed it (one string, compared as is)."""
    parts = [preset_label(int(chosen.eta_levels))]
    if model.generator is None or chosen.refine_steps:  # the generator writes its own trained pattern otherwise
        parts.append(f"target {chosen.target}")
    if model.generator is None:  # the generator places its change by texture itself: adaptive strength is unused
        parts.append("adaptive strength " + ("on" if chosen.adaptive_strength else "off"))
    if chosen.refine_steps:
        parts.append(f"{chosen.refine_steps} refine steps")
    if chosen.min_energy == 0 and flat_min_energy(model) > 0:
        parts.append("flat images not lifted")
    return ", ".join(parts)


def page_settings(ctx: SpaceContext, eta_levels: Any, target: Any, adaptive: Any, refine_steps: Any, lift_flat: Any) -> str | None:
    """The label of the settings on the page now (None when they are not valid, or nothing is loaded yet)."""
    try:
        chosen, model = chosen_for(ctx, eta_levels, target, adaptive, refine_steps, lift_flat)
    except VisitorError:
        return None
    return settings_label(chosen, model)


def marked(verdict: str, made_with: str, now: str | None) -> str:
    """The verdict, marked when the settings on the page are no longer those the result was made with."""
    if now is None or now == made_with:
        return verdict
    return f"⚠️ **Made with {made_with}; the settings have changed since.** Press **Protect** to apply them.\n\n{verdict}"


def upload_key(image: Any) -> str | None:
    """What identifies the image in the box: its server path (Gradio stores each upload under a content hash)."""
    upload = space.uploaded_path(image)
    return upload[0] if upload is not None else None


def prepare_verdict(ctx: SpaceContext, image: Any) -> bool:
    """Start the verdict's clean half of the image now in the box (:mod:`webapp.references`) on a background
    thread, so that a click measures two round trips instead of three. Returns at once; False when nothing was
    started (no image, models still loading, too many waiting). Silent: an image that cannot be read is for the
    click to report."""
    path = upload_key(image)
    if path is None or not Path(path).exists():
        return False
    if isinstance(ctx.loaded, space.BackgroundLoad) and not ctx.loaded.ready:
        return False  # never hold a thread for the models: the click measures the clean copy itself
    model = ctx.outcome.protector
    if model is None:
        return False
    return ctx.references.start(path, lambda: clean_reference(model, load_image(path, max_pixels=ctx.limits.max_pixels, levels=True).pixels))


def protect(ctx: SpaceContext, image: Any, eta_levels: Any = DEFAULT_ETA_LEVELS, target: Any = "auto", adaptive: Any = True,
            refine_steps: Any = 0, lift_flat: Any = None, *, progress: Progress | None = None, session: str | None = None) -> ProtectOutputs:
    """:func:`protect_steps` to its end: the final outputs (tests and callers without a page)."""
    out = None
    for out in protect_steps(ctx, image, eta_levels, target, adaptive, refine_steps, lift_flat, progress=progress, session=session):
        pass
    return out


def protect_steps(ctx: SpaceContext, image: Any, eta_levels: Any = DEFAULT_ETA_LEVELS, target: Any = "auto", adaptive: Any = True,
                  refine_steps: Any = 0, lift_flat: Any = None, *, progress: Progress | None = None,
                  session: str | None = None) -> Iterator[ProtectOutputs]:
    """Protect one upload; yields twice: the protected image and its download as soon as they exist, then the
    same with the visibility and strength verdict (measured once, on a small copy: the numbers every view shows).

    ``session``: the browser session (Gradio's session hash). When the page's image was replaced while this ran,
    the result is not shown beside the new image (:data:`STALE_IMAGE`); when only settings changed, it is marked.
    The visitor's original stays in Gradio's upload folder so that another strength can be tried on it; the
    workspace's timer removes it with the results (:mod:`webapp.privacy`). A refused or failed request deletes its
    own folder at once, never the upload (another visitor may share it)."""
    start = time.perf_counter()
    upload = space.uploaded_path(image)
    if upload is None:
        raise VisitorError("Upload an image first.")
    path, name = upload
    chosen, model = chosen_for(ctx, eta_levels, target, adaptive, refine_steps, lift_flat)
    made_with = settings_label(chosen, model)
    if not Path(path).exists():
        raise VisitorError(f"{name}: this upload is no longer on the server (uploads are kept 15 minutes); drop the image again.")
    size = space.header_size(path)
    if size is not None:
        check_disk(ctx, space.estimated_bytes(*size))
    ctx.workspace.sweep(ctx.limits.workspace_max_age_s)
    folder = ctx.workspace.new_dir("protect")
    try:
        outcome = space.protect_upload(model, path, chosen, folder, name=name, max_pixels=ctx.limits.max_pixels, progress=progress,
                                       compute_metrics=False, view_max_side=ctx.limits.view_max_side, upload=path)
    except (ImageError, space.SpaceInputError) as error:
        ctx.workspace.discard(folder)
        raise VisitorError(f"{name}: {error}") from None
    except Exception as error:  # a bug, not the visitor's fault: logged, and a short message
        ctx.workspace.discard(folder)
        logger.exception("protect failed on %r", name)
        raise VisitorError(f"{name}: protection failed ({type(error).__name__}). Please try another image.") from None
    info = honest_info(outcome.info, chosen, model)
    last = {"name": name, "settings": made_with, "clean": str(outcome.view_paths[0]), "protected": str(outcome.view_paths[1])}
    shown_s = time.perf_counter() - start
    info["timings_s"] = {**(info.get("timings_s") or {}), "until shown": round(shown_s, 3)}
    head = f"**Protected with {made_with}** in {shown_s:.1f} s."
    page = ctx.sessions.now(session)
    if page is not None and page.upload is not None and page.upload != path:
        yield reset_outputs(STALE_IMAGE)
        return
    now = page.settings if page is not None else None
    yield ProtectOutputs(marked(f"{head} {MEASURING}", made_with, now), str(outcome.png_path), outcome.view_paths,
                         "", None, None, info, None)

    if progress is not None:
        progress(0.95, "measuring visibility and strength")
    verdict_start = time.perf_counter()
    try:
        verdict = quick_verdict(model, outcome.loaded.pixels, outcome.protected_pixels.cpu(), lifted=chosen.min_energy != 0 and flat_min_energy(model) > 0,
                                reference=ctx.references.get(path))
    except Exception:  # the verdict is a readout; a failure must not cost the protected file
        logger.exception("verdict failed on %r", name)
        verdict = None
    info["timings_s"]["verdict"] = round(time.perf_counter() - verdict_start, 3)
    if verdict is not None:
        info["verdict"] = space._json_safe(verdict.as_dict())
        last["verdict"] = info["verdict"]
    page = ctx.sessions.now(session)
    if page is not None and page.upload is not None and page.upload != path:
        yield reset_outputs(STALE_IMAGE)
        return
    now = page.settings if page is not None else None
    text = f"{head} {verdict.sentence}" if verdict is not None else f"{head} The visibility and strength readout could not be measured on this image."
    last["verdict_markdown"] = text
    pictures_start = time.perf_counter()
    perturbation, lpips_map = privacy.store_detail_views(outcome, folder)  # each picture written once
    info["timings_s"]["pictures"] = round(time.perf_counter() - pictures_start, 3)
    yield ProtectOutputs(marked(text, made_with, now), str(outcome.png_path), outcome.view_paths, details_markdown(info, verdict, model),
                         perturbation, lpips_map, info, last)


def honest_info(info: dict[str, Any], chosen: space.ProtectOptions, model: Protector) -> dict[str, Any]:
    """The info record with only what was used: the generator without refine steps writes its own trained
    pattern whatever target was asked (the library records the one asked), and the full-image metrics
    were not computed (the verdict's numbers, on one copy, are the result's only measurement)."""
    info = {key: value for key, value in info.items() if key not in ("psnr_db", "ssim", "lpips")}
    if model.generator is not None and not chosen.refine_steps:
        info["target"] = model.generator.config.target
    if model.generator is not None:
        info.pop("adaptive_strength", None)
    return info


def number(value: float | None, digits: int = 3) -> str:
    """A measured value for the page: 'n/a' when missing, and never '−0.000' (a value that rounds to zero is 0)."""
    if value is None:
        return "n/a"
    rounded = round(value, digits)
    return f"{0.0 if rounded == 0 else rounded:.{digits}f}"


def check_disk(ctx: SpaceContext, needed: int) -> None:
    """Refuse, with one line, a request whose outputs would exceed the per-request cap or the free disk."""
    cap = ctx.limits.request_disk_bytes
    if needed > cap:
        raise VisitorError(f"this request would write about {needed / 1e6:.0f} MB; the limit per request is {cap / 1e6:.0f} MB. Send fewer or smaller images.")
    try:
        free = shutil.disk_usage(ctx.workspace.root).free
    except OSError:
        return
    if needed > free - 200_000_000:
        raise VisitorError("the server's disk is nearly full; please try again in a few minutes.")


# The terms the page uses, in plain words: shown under Details (the first screen avoids them).
GLOSSARY: tuple[tuple[str, str], ...] = (
    ("η (strength)", "the largest change allowed to any pixel value, in levels of 255 (8 = a change of at most 8 in 0…255)"),
    ("LPIPS", "a learned measure of how different two images look to people (here its AlexNet version): 0 = identical"),
    ("PSNR", "pixel-level closeness in decibels: higher = closer"),
    ("autoencoder", "the part of an image model that compresses a picture before it learns from or edits it; "
                    "protection changes what it sees"),
    ("TAEF2", "a tiny distilled copy of the FLUX.2 autoencoder, the network every number here is measured with"),
    ("damage", "how much farther from your image the autoencoder's view of the protected copy lands than its view of "
               "the clean one (LPIPS); higher = stronger protection"),
    ("test images", "pictures never used to train the protection, on which the strength presets were measured"),
)


def details_markdown(info: dict[str, Any], verdict: Verdict | None, model: Protector | None = None) -> str:
    """Every number of one result, each with a one-line meaning, then the glossary. The visibility and strength
    numbers are the verdict's (one measurement per result, the same on every view)."""
    bands = "; ".join(f"< {bound:g}: {words}" for bound, words in VISIBILITY_SCALE if bound != float("inf"))
    rows = [
        ("LPIPS (visibility)", number(verdict.lpips if verdict else None),
         f"how different the protected copy looks: 0 = identical. Bands: {bands}; above: clearly visible"),
        ("PSNR", f"{number(verdict.psnr_db if verdict else None, 1)} dB", "pixel-level closeness: higher = closer (random ±4/255 noise measures 36.6 dB, ±8/255 30.6 dB)"),
        ("damage", number(verdict.damage if verdict else None), "how much farther the autoencoder's view of the protected copy lands from your image than its view of the clean one; higher = stronger"),
        ("damage of random noise", number(verdict.noise_damage if verdict else None), "the same for random noise of the same energy (same PSNR): what no protection at all would do"),
        ("ratio", "n/a" if not verdict or verdict.ratio is None else f"{verdict.ratio:.1f}×", "damage ÷ noise damage: near 1 = no better than noise"),
        ("largest change", f"{info.get('linf_levels')} of {info.get('eta_levels')} levels", "largest change of any pixel value, in levels of 255 (the budget η), on the full image"),
        ("method", METHOD_WORDS.get(info.get("method"), str(info.get("method"))), "how the change was made"),
        ("target pattern", info.get("target") if info.get("group") is None else f"{info.get('target')} (group {info.get('group')})",
         "the pattern the protection pulls the autoencoder's view towards" + ("; group = the mixture's K-means group" if info.get("group") is not None else "")),
        ("size", f"{info.get('width')}×{info.get('height')}", "of the protected PNG: the same as your image"),
    ]
    timings = info.get("timings_s") or {}
    rows += [(f"time: {stage}", f"{seconds:.2f} s", TIMING_MEANINGS.get(stage, "one stage of the protection")) for stage, seconds in timings.items()]
    lines = ["| measure | value | meaning |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)]
    encoder = autoencoder_name(model) if model is not None else "the protector's own autoencoder"
    lines += ["", f"Visibility and strength are measured once per result, on a copy scaled to a mimic's training size (long side ≤ 1024) "
              f"and centre-cropped to 256², with {encoder}; the verdict, this table and Mimic's view show the same numbers."]
    notes = info.get("notes") or []
    lines += ["", *(f"- {note}" for note in notes)] if notes else []
    lines += ["", "**Glossary**", "", *(f"- **{term}**: {meaning}" for term, meaning in GLOSSARY)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ batch
class BatchOutputs(NamedTuple):
    zip_path: str
    report: list[list[Any]]
    pairs: list[list[str]]  # (clean copy, protected PNG) for the duel's "reuse my batch" (gr.State)
    warning: str | None  # every failed file with its whole reason, when some failed


def batch(ctx: SpaceContext, files: Sequence[Any] | None, eta_levels: Any, target: Any, adaptive: Any,
          lift_flat: Any = None, *, progress: Progress | None = None) -> BatchOutputs:
    """Protect up to ``max_batch_files`` uploads into one ZIP with its report. ``lift_flat``: as in
    :func:`protect` (turned off, the file names say ``_unlifted``).

    The uploads are left where Gradio put them, as on the Protect tab: the same files can be run again with
    another strength (the cache sweep removes them; deleting them here broke that, and could remove another
    visitor's identical upload, which Gradio stores under the same content hash)."""
    uploads = [upload for upload in map(space.uploaded_path, files or []) if upload is not None]
    chosen, model = chosen_for(ctx, eta_levels, target, adaptive, 0, lift_flat)
    if len(uploads) > ctx.limits.max_batch_files:
        raise VisitorError(f"{len(uploads)} files given; at most {ctx.limits.max_batch_files} per batch.")
    gone = [name for path, name in uploads if not Path(path).exists()]
    if gone:
        raise VisitorError(f"{', '.join(gone)}: no longer on the server (uploads are kept 15 minutes); drop the files again.")
    sizes = [space.header_size(path) for path, _ in uploads]
    pixels = sum(width * height for width, height, _ in filter(None, sizes))
    if pixels > ctx.limits.batch_max_pixels:
        raise VisitorError(f"this batch has {pixels / 1e6:.0f} MP in all; the limit is {ctx.limits.batch_max_pixels / 1e6:.0f} MP per batch. Send fewer or smaller images.")
    check_disk(ctx, 2 * sum(space.estimated_bytes(*size) for size in sizes if size is not None))  # PNGs + the ZIP's copies
    ctx.workspace.sweep(ctx.limits.workspace_max_age_s)
    folder = ctx.workspace.new_dir("batch")
    try:
        outcome = space.protect_batch(model, uploads, chosen, folder, max_files=ctx.limits.max_batch_files,
                                      max_pixels=ctx.limits.max_pixels, progress=progress)
    except space.SpaceInputError as error:
        ctx.workspace.discard(folder)
        raise VisitorError(str(error)) from None
    pairs = []
    for index, (clean, png) in enumerate(outcome.protected):  # the duel's clean images: hard links, no bytes copied
        copy = space.link_into(clean, folder, f"clean_{index}")
        if copy is None:  # another file system: one copy at the protected PNG's size
            copy = folder / f"clean_{index}.png"
            with Image.open(png) as protected_image:
                size = protected_image.size
            load_and_fit(clean, size, copy)
        pairs.append([str(copy), str(png)])
    # The uploads stay until the workspace's timer: Gradio's cache is content-addressed, so deleting one
    # here could delete another visitor's identical upload (and a re-run with another strength needs them).
    return BatchOutputs(str(outcome.zip_path), space.report_table(outcome.rows), pairs, batch_warning(outcome.rows))


def batch_warning(rows: Sequence[dict[str, Any]]) -> str | None:
    """Every failed file with its whole reason (a table cell would cut it off), or None when all were protected."""
    failed = [row for row in rows if row.get("status") != "ok"]
    if not failed:
        return None
    reasons = " ".join(f"{row['file']}: {str(row.get('message') or 'not protected').rstrip('.')}." for row in failed)
    return f"{len(failed)} of {len(rows)} files could not be protected. {reasons}"


def load_and_fit(source: str | os.PathLike, size: tuple[int, int], destination: Path) -> None:
    """The clean image as RGB at ``size`` (the protected PNG's), saved as PNG."""
    loaded = load_image(source)
    space.tensor_to_pil(loaded.pixels).resize(size).save(destination)


# -------------------------------------------------------------------------------- the proofs
class RoundTripOutputs(NamedTuple):
    clean: Image.Image
    protected: Image.Image
    markdown: str


def _last_images(last: dict[str, Any] | None):
    if not last:
        raise VisitorError("Protect an image in the Protect tab first (or click an example); its clean and protected copies are compared here.")
    if not all(Path(last[key]).exists() for key in ("clean", "protected")):
        raise VisitorError("That result has expired (results are kept 15 minutes): protect the image again.")
    try:
        return load_image(last["clean"]), load_image(last["protected"])
    except ImageError:
        raise VisitorError("That result has expired (results are kept 15 minutes): protect the image again.") from None


def round_trip_caption(ctx: SpaceContext) -> str:
    """Which autoencoder the round trip uses, named truthfully."""
    if ctx.mimic is not None:
        return f"the VAE of {family_name(ctx.family)} (the model a mimic would fine-tune)"
    return f"{autoencoder_name(ctx.protector)}, the autoencoder the protection was computed against"


def showing(last: dict[str, Any] | None) -> str:
    """Which result the Mimic's view is about, by the image's own name and settings."""
    if not last:
        return "Protect an image in the Protect tab first (or click an example)."
    return f"Your protected **{last.get('name', 'image')}** ({last.get('settings', '')}): press the button to see its round trip."


def round_trip(ctx: SpaceContext, last: dict[str, Any] | None, *, progress: Progress | None = None) -> RoundTripOutputs:
    """decode(encode(x)) of the last protected image and of its clean original, named. Without a mimic the
    numbers are the result's own verdict (one measurement per result); a mimic's VAE is another network,
    measured here and named."""
    clean, protected = _last_images(last)
    model = ctx.need_protector()
    if progress is not None:
        progress(0.2, "encoding and decoding")
    head = f"**{last.get('name', 'image')}**, protected with {last.get('settings', 'the settings shown on the Protect tab')}. Autoencoder: {round_trip_caption(ctx)}."
    if ctx.mimic is not None:
        from attack.mimic import family_autoencoder

        seen = views.mimic_round_trip(model, clean, protected, max_side=ctx.limits.round_trip_max_side,
                                      autoencoder=family_autoencoder(ctx.mimic), device=ctx.mimic.device)
        return RoundTripOutputs(seen.clean, seen.protected, f"{head}\n\n{seen.markdown}")
    seen = views.mimic_round_trip(model, clean, protected, max_side=ctx.limits.round_trip_max_side, measure=False)
    return RoundTripOutputs(seen.clean, seen.protected, f"{head}\n\n{verdict_table(last.get('verdict'))}")


def verdict_table(verdict: dict[str, Any] | None) -> str:
    """The result's own verdict numbers, as the Protect tab's verdict and Details show them."""
    if not verdict or verdict.get("lpips") is None:
        return "Visibility and strength were not measured for this result (LPIPS is not loaded on this server): pictures only."
    rows = [("how different the protected copy looks (LPIPS)", number(verdict.get("lpips"))),
            ("damage: how much farther the autoencoder's view of the protected copy lands", number(verdict.get("damage"))),
            ("damage of random noise of the same energy", number(verdict.get("noise_damage")))]
    return "\n".join(["| measured once, when protected (the verdict's numbers) | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def img2img(ctx: SpaceContext, last: dict[str, str] | None, prompt: str, strength: float) -> tuple[Image.Image, Image.Image]:
    if not ctx.attacks_on:
        raise VisitorError(f"img2img with {family_name(ctx.family)} needs a GPU, and this machine has none.")
    clean, protected = _last_images(last)
    return views.mimic_img2img(ctx.mimic, clean, protected, str(prompt), float(strength))


def duel(ctx: SpaceContext, files: Sequence[Any] | None, reuse_batch: bool, batch_pairs: Sequence[Sequence[str]] | None,
         steps: int, *, progress: Progress | None = None) -> tuple[Image.Image, dict[str, Any]]:
    if not ctx.attacks_on:
        raise VisitorError(f"The LoRA duel with {family_name(ctx.family)} needs a GPU, and this machine has none.")
    model = ctx.need_protector()
    try:
        if reuse_batch:
            pairs = [(clean, png) for clean, png in (batch_pairs or [])]
            if not all(Path(p).exists() for pair in pairs for p in pair):
                raise VisitorError("That batch has expired (results are kept 15 minutes): protect it again in the Batch tab.")
            return views.lora_duel_from_pairs(ctx.mimic, pairs, model, ctx.workspace.new_dir("duel"), int(steps), progress, limits=ctx.limits.duel_images)
        uploads = [upload for upload in map(space.uploaded_path, files or []) if upload is not None]
        return views.lora_duel_from_uploads(ctx.mimic, uploads, model, ctx.workspace.new_dir("duel"), int(steps), progress,
                                            limits=ctx.limits.duel_images, max_pixels=ctx.limits.max_pixels)
    except (ImageError, space.SpaceInputError) as error:
        raise VisitorError(str(error)) from None
