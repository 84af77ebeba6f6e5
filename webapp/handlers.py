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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image

from fastprotect.images import ImageError, load_image
from fastprotect.mixture import MIMIC_FAMILY_OF_ENCODER
from fastprotect.protect import Protector
from fastprotect.verdict import VISIBILITY_SCALE, Verdict, quick_verdict
from fastprotect.vocabulary import AUTOENCODER_DISPLAY_NAMES, DEFAULT_ETA_LEVELS

from . import privacy, space, views
from .limits import SpaceLimits

logger = logging.getLogger("fastprotect.app")
Progress = Callable[[float, str], None]

# How the page names each mimic family (attack.families): the model a mimic would actually use.
FAMILY_DISPLAY_NAMES: dict[str, str] = {"sd-1.5": "Stable Diffusion 1.5", "flux.2-klein": "FLUX.2 [klein] 4B"}

# The strength presets, with what the evaluation measured for each η (docs/EVALUATION.md, issue 10's table;
# benchmarks/results/noise_control_cpu_taef2.json, rows "generator η 4/8/12"): mean LPIPS-alex of the bundled
# generator on 16 held-out images at 256², against TAEF2.
PRESETS: tuple[tuple[str, int, float], ...] = (("Light", 4, 0.014), ("Standard", 8, 0.057), ("Strong", 12, 0.110))
PRESET_SOURCE = "mean LPIPS-alex on 16 held-out images, bundled generator, docs/EVALUATION.md"


TIMING_MEANINGS = {
    "total": "the protection itself (all the stages above)",
    "metrics": "PSNR, SSIM and LPIPS of the full image (the info record)",
    "verdict": "the visibility and strength readout at the top",
    "total (you waited)": "everything: the time you waited for this result",
}


METHOD_WORDS = {
    "generator": "generator (one forward pass, texture budget; the default)",
    "mixture": "mixture of perturbations (the paper's method)",
    "per-image": "per-image PGD (no pre-trained checkpoint)",
}


class VisitorError(Exception):
    """A request that cannot be served, with one line that says why (shown on the page)."""


def family_of(protector: Protector | None) -> str:
    """The mimic family the loaded protection targets: the checkpoint's ``mimic_base``; in
    per-image mode, the family of the encoder kind."""
    if protector is None:
        return "flux.2-klein"
    if protector.checkpoint_config is not None:
        return protector.checkpoint_config.mimic_base
    return MIMIC_FAMILY_OF_ENCODER.get(getattr(protector.autoencoder, "kind", "taef2"), "sd-1.5")


def family_name(family: str) -> str:
    return FAMILY_DISPLAY_NAMES.get(family, family)


def autoencoder_name(protector: Protector | None) -> str:
    kind = getattr(protector.autoencoder, "kind", None) if protector is not None else None
    return AUTOENCODER_DISPLAY_NAMES.get(kind, f"the protector's own autoencoder ({kind or 'none'})")


@dataclass
class SpaceContext:
    """What the handlers share: the loaded protector (or why there is none), the workspace, the
    limits, and the mimic for the proof tabs (None on a CPU)."""

    loaded: space.LoadOutcome
    workspace: space.Workspace
    limits: SpaceLimits = field(default_factory=SpaceLimits)
    mimic: Any | None = None  # attack.mimic.Mimic, loaded once at start-up on a GPU
    # Gradio's upload folder (the workspace itself in the Space: webapp.privacy). No handler deletes
    # anything in it: uploads go with the workspace's timer, signals and restarts only.
    upload_root: Path | None = None

    @property
    def protector(self) -> Protector | None:
        return self.loaded.protector

    @property
    def family(self) -> str:
        return self.mimic.family if self.mimic is not None else family_of(self.protector)

    @property
    def attacks_on(self) -> bool:
        return self.mimic is not None

    def need_protector(self) -> Protector:
        if self.protector is None:
            raise VisitorError(f"Protection is unavailable: the models could not be loaded. {self.loaded.error}")
        return self.protector


# "Lift flat images" (on by default with the generator): its minimum energy, in RMS levels at η 8 — the one value
# measured (chosen on training-pool images, checked on the held-out ones: docs/EVALUATION.md), the bundled checkpoint's.
FLAT_MIN_ENERGY = 2.5


def options(eta_levels: Any, target: Any, adaptive: Any, refine_steps: Any, lift_flat: Any = None) -> space.ProtectOptions:
    """The visitor's choices, validated by the library's own checks (one bound everywhere). ``lift_flat``: True =
    FLAT_MIN_ENERGY, False = off (0), None = the checkpoint's own (a mixture has none)."""
    try:
        return space.ProtectOptions(int(eta_levels), str(target), bool(adaptive), int(refine_steps or 0),
                                    min_energy=None if lift_flat is None else FLAT_MIN_ENERGY if lift_flat else 0.0)
    except (TypeError, ValueError) as error:
        raise VisitorError(str(error)) from None


def chosen_for(ctx: SpaceContext, eta_levels: Any, target: Any, adaptive: Any, refine_steps: Any,
               lift_flat: Any) -> tuple[space.ProtectOptions, Protector]:
    """The validated options and the loaded protector, or one line: "Lift flat images" is the
    generator's (the Protect and Batch tabs ask the same). Not given (None): on with the generator."""
    model = ctx.need_protector()
    if model.generator is None:
        if lift_flat:
            raise VisitorError(f"'Lift flat images' needs the generator; this Space runs the {model.method}.")
        lift_flat = None  # nothing to turn off: a mixture has no minimum energy
    elif lift_flat is None:
        lift_flat = True
    return options(eta_levels, target, adaptive, refine_steps, lift_flat), model


# ------------------------------------------------------------------------------ protect one
class ProtectOutputs(NamedTuple):
    verdict: str  # Markdown: one line in plain words
    png: str | None  # the download, full resolution
    before_after: tuple[str, str] | None  # image files in the request's folder (webapp.privacy.store_views)
    details: str  # Markdown: each number with a one-line meaning
    perturbation: str | None
    lpips_map: str | None
    info: dict[str, Any] | None
    last: dict[str, str] | None  # the mimic tab's copies of the last result (gr.State)


READY_HINT = "Choose a strength and press **Protect**."


def reset_outputs() -> ProtectOutputs:
    """What a new upload or a cleared input shows: nothing from the previous image."""
    return ProtectOutputs(READY_HINT, None, None, "", None, None, None, None)


def preset_label(levels: int) -> str:
    for name, preset, lpips in PRESETS:
        if preset == levels:
            return f"{name}: η = {levels}/255, measured LPIPS ≈ {lpips:.2f}"
    return f"η = {levels}/255"


def protect(ctx: SpaceContext, image: Any, eta_levels: Any = DEFAULT_ETA_LEVELS, target: Any = "auto", adaptive: Any = True,
            refine_steps: Any = 0, lift_flat: Any = None, *, progress: Progress | None = None) -> ProtectOutputs:
    """Protect one upload: the PNG, the before/after pair, the verdict and its numbers. ``lift_flat``:
    the generator's minimum energy (FLAT_MIN_ENERGY) for images its texture budget leaves untouched; on unless False.

    The visitor's original stays in Gradio's upload folder so that another strength can be tried
    on it; the workspace's timer removes it with the results (:mod:`webapp.privacy`). A refused or
    failed request deletes its own folder at once, never the upload (another visitor may share it)."""
    start = time.perf_counter()
    upload = space.uploaded_path(image)
    if upload is None:
        raise VisitorError("Upload an image first.")
    path, name = upload
    chosen, model = chosen_for(ctx, eta_levels, target, adaptive, refine_steps, lift_flat)
    if not Path(path).exists():
        raise VisitorError(f"{name}: this upload is no longer on the server (uploads are kept 15 minutes); drop the image again.")
    size = space.header_size(path)
    if size is not None:
        check_disk(ctx, space.estimated_bytes(*size))
    ctx.workspace.sweep(ctx.limits.workspace_max_age_s)
    folder = ctx.workspace.new_dir("protect")
    try:
        outcome = space.protect_upload(model, path, chosen, folder, name=name, max_pixels=ctx.limits.max_pixels, progress=progress)
    except (ImageError, space.SpaceInputError) as error:
        ctx.workspace.discard(folder)
        raise VisitorError(f"{name}: {error}") from None
    except Exception as error:  # a bug, not the visitor's fault: logged, and a short message
        ctx.workspace.discard(folder)
        logger.exception("protect failed on %r", name)
        raise VisitorError(f"{name}: protection failed ({type(error).__name__}). Please try another image.") from None
    if progress is not None:
        progress(0.9, "measuring visibility and strength")
    verdict_start = time.perf_counter()
    try:
        verdict = quick_verdict(model, outcome.loaded.pixels, outcome.protected_pixels.cpu(), lifted=bool(chosen.min_energy))
    except Exception:  # the verdict is a readout; a failure must not cost the protected file
        logger.exception("verdict failed on %r", name)
        verdict = None
    verdict_s = time.perf_counter() - verdict_start
    shown = privacy.store_views(outcome, folder, path, ctx.limits.view_max_side)  # each picture written once
    last = {"clean": shown.before, "protected": shown.after}
    waited = time.perf_counter() - start
    outcome.info["timings_s"] = {**(outcome.info.get("timings_s") or {}), "verdict": round(verdict_s, 3), "total (you waited)": round(waited, 3)}
    if verdict is not None:
        outcome.info["verdict"] = space._json_safe(verdict.as_dict())
    return ProtectOutputs(
        verdict_markdown(verdict, chosen, waited), str(outcome.png_path), (shown.before, shown.after), details_markdown(outcome.info, verdict),
        shown.perturbation, shown.lpips_map, outcome.info, last,
    )


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


def verdict_markdown(verdict: Verdict | None, chosen: space.ProtectOptions, waited_s: float) -> str:
    unlifted = ", flat images not lifted" if chosen.min_energy == 0 else ""
    head = f"**Protected at {preset_label(int(chosen.eta_levels)).split(',')[0]}{unlifted}** in {waited_s:.1f} s."
    if verdict is None:
        return f"{head} The visibility and strength readout could not be measured on this image."
    return f"{head} {verdict.sentence}"


def details_markdown(info: dict[str, Any], verdict: Verdict | None) -> str:
    """Every number of one result, each with a one-line meaning."""

    def num(value: Any, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    bands = "; ".join(f"< {bound:g}: {words}" for bound, words in VISIBILITY_SCALE if bound != float("inf"))
    rows = [
        ("LPIPS (visibility)", num(verdict.lpips if verdict else info.get("lpips"), ".3f"),
         f"perceptual distance to your image (AlexNet): 0 = identical. Bands: {bands}; above: clearly visible"),
        ("PSNR", f"{num(verdict.psnr_db if verdict else info.get('psnr_db'), '.1f')} dB", "pixel-level closeness: higher = closer (random ±4/255 noise measures 36.6 dB, ±8/255 30.6 dB; docs/EVALUATION.md)"),
        ("damage", num(verdict.damage if verdict else None, ".3f"), "how much farther from your image the mimic's autoencoder view of the protected copy lands than its view of the clean one (LPIPS); higher = stronger"),
        ("damage of random noise", num(verdict.noise_damage if verdict else None, ".3f"), "the same for random noise of the same energy (same PSNR): what no protection at all would do"),
        ("ratio", "n/a" if not verdict or verdict.ratio is None else f"{verdict.ratio:.1f}×", "damage ÷ noise damage: near 1 = no better than noise"),
        ("L∞", f"{info.get('linf_levels')} of {info.get('eta_levels')} levels", "largest change of any pixel value, in 8-bit levels (the budget η)"),
        ("SSIM", num(info.get("ssim"), ".3f"), "structural similarity on the full image: 1 = identical"),
        ("method", METHOD_WORDS.get(info.get("method"), str(info.get("method"))), "how the change was made"),
        ("target pattern", info.get("target") if info.get("group") is None else f"{info.get('target')} (group {info.get('group')})",
         "the pattern the protection pulls the mimic's view towards" + ("; group = the mixture's K-means group" if info.get("group") is not None else "")),
        ("size", f"{info.get('width')}×{info.get('height')}", "of the protected PNG: the same as your image"),
    ]
    timings = info.get("timings_s") or {}
    rows += [(f"time: {stage}", f"{seconds:.2f} s", TIMING_MEANINGS.get(stage, "one stage of the protection")) for stage, seconds in timings.items()]
    lines = ["| measure | value | meaning |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)]
    if verdict is not None:
        lines += ["", "Visibility and strength are measured on a copy scaled to a mimic's training size (long side ≤ 1024) and centre-cropped to 256², with the protector's own autoencoder."]
    notes = info.get("notes") or []
    lines += ["", *(f"- {note}" for note in notes)] if notes else []
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ batch
class BatchOutputs(NamedTuple):
    zip_path: str
    report: list[list[Any]]
    pairs: list[list[str]]  # (clean copy, protected PNG) for the duel's "reuse my batch" (gr.State)
    warning: str | None  # a one-line warning when some files failed


def batch(ctx: SpaceContext, files: Sequence[Any] | None, eta_levels: Any, target: Any, adaptive: Any,
          lift_flat: Any = None, *, progress: Progress | None = None) -> BatchOutputs:
    """Protect up to ``max_batch_files`` uploads into one ZIP with its report. ``lift_flat``: as in
    :func:`protect` (turned off, the file names say ``_unlifted``)."""
    uploads = [upload for upload in map(space.uploaded_path, files or []) if upload is not None]
    chosen, model = chosen_for(ctx, eta_levels, target, adaptive, 0, lift_flat)
    if len(uploads) > ctx.limits.max_batch_files:
        raise VisitorError(f"{len(uploads)} files given; at most {ctx.limits.max_batch_files} per batch")
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
        copy = privacy.link_into(clean, folder, f"clean_{index}")
        if copy is None:  # another file system: one copy at the protected PNG's size
            copy = folder / f"clean_{index}.png"
            with Image.open(png) as protected_image:
                size = protected_image.size
            load_and_fit(clean, size, copy)
        pairs.append([str(copy), str(png)])
    # The uploads stay until the workspace's timer: Gradio's cache is content-addressed, so deleting one
    # here could delete another visitor's identical upload (and a re-run with another strength needs them).
    warning = f"{len(outcome.failures)} of {len(outcome.rows)} files could not be protected: see the report." if outcome.failures else None
    return BatchOutputs(str(outcome.zip_path), space.report_table(outcome.rows), pairs, warning)


def load_and_fit(source: str | os.PathLike, size: tuple[int, int], destination: Path) -> None:
    """The clean image as RGB at ``size`` (the protected PNG's), saved as PNG."""
    loaded = load_image(source)
    space.tensor_to_pil(loaded.pixels).resize(size).save(destination)


# -------------------------------------------------------------------------------- the proofs
class RoundTripOutputs(NamedTuple):
    clean: Image.Image
    protected: Image.Image
    markdown: str


def _last_images(last: dict[str, str] | None):
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


def round_trip(ctx: SpaceContext, last: dict[str, str] | None, *, progress: Progress | None = None) -> RoundTripOutputs:
    """decode(encode(x)) of the last protected image and of its clean original."""
    clean, protected = _last_images(last)
    model = ctx.need_protector()
    if progress is not None:
        progress(0.2, "encoding and decoding")
    if ctx.mimic is not None:
        from attack.mimic import family_autoencoder

        seen = views.mimic_round_trip(model, clean, protected, max_side=ctx.limits.round_trip_max_side,
                                      autoencoder=family_autoencoder(ctx.mimic), device=ctx.mimic.device)
    else:
        seen = views.mimic_round_trip(model, clean, protected, max_side=ctx.limits.round_trip_max_side)
    return RoundTripOutputs(seen.clean, seen.protected, f"Autoencoder: {round_trip_caption(ctx)}.\n\n{seen.markdown}")


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


# ------------------------------------------------------------------------------- shutdown
install_cleanup = privacy.install_cleanup  # SIGTERM / SIGINT delete the workspace (kept here for callers)
