"""FastProtect Space: protect images against diffusion-model mimicry, and watch a mimic fail.

Constants, layout, wiring and launch only. The handlers are plain functions in
:mod:`webapp.handlers` (tests call them without a server), the limits one frozen
:class:`webapp.limits.SpaceLimits`, and every file the page serves is written below one private
``tempfile.mkdtemp`` folder (:class:`webapp.space.Workspace`), removed on exit, SIGTERM and SIGINT.
Models are loaded once in ``main()``, never per request and never at import.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from pathlib import Path
from typing import Any

# Before torch is imported: idle OpenMP threads sleep instead of spinning, which keeps latency sane
# when a Space's vCPUs are shared (docs/BENCHMARKS.md, "What 2 cores cannot meet; GPU").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from fastprotect import environment  # noqa: E402
from fastprotect.targets import target_patterns  # noqa: E402
from fastprotect.vocabulary import AUTOENCODER_DISPLAY_NAMES, DEFAULT_ETA_LEVELS, MAX_REFINE_STEPS, TARGET_CHOICES, TARGET_NAMES  # noqa: E402
from webapp import handlers, privacy, space  # noqa: E402
from webapp.examples import EXAMPLE_CREDIT, make_example_images  # noqa: E402
from webapp.handlers import PRESETS, SpaceContext, VisitorError  # noqa: E402
from webapp.limits import SpaceLimits  # noqa: E402

logger = logging.getLogger("fastprotect.app")
TITLE = "FastProtect: protect images against diffusion mimicry"
PAPER_URL = "https://arxiv.org/abs/2412.11423"
# Per-image mode (no checkpoint found) runs PGD on a copy this size, for this many steps: about
# 20 s on a 2-core CPU with TAEF2 instead of minutes at full size.
PER_IMAGE_OPTIONS = {"work_size": 256, "per_image_steps": 20}
GPU_SECONDS = {"round_trip": 30, "img2img": 60, "duel": 300}  # ZeroGPU reservations (proofs only)
# A ZeroGPU Space has the `spaces` package. There protection runs on the CPU (docs/SPACE.md, "ZeroGPU").
ZERO_GPU = importlib.util.find_spec("spaces") is not None
TABS = {"protect": "Protect", "mimic": "Mimic's view", "duel": "LoRA duel", "batch": "Batch", "about": "About"}
EXAMPLE_LABELS = {"sunset_hills": "Example: sunset hills", "mosaic_tiles": "Example: mosaic tiles", "blue_marble": "Example: blue marble"}
LOADING = "⏳ **Loading the protection model** (a few seconds). You can upload an image meanwhile; Protect waits for it."
# On a phone the result column sits below the button: bring it into view at the click, so that the progress shows
# where the visitor looks (Gradio scrolls to the result again when it lands: scroll_to_output).
SCROLL_TO_RESULT_JS = "() => { if (window.innerWidth < 768) document.getElementById('verdict')?.scrollIntoView({block: 'start'}); }"


def lift_label(min_energy: float) -> str:
    """"Lift flat images", named the same on the Protect and Batch tabs, with the checkpoint's own minimum energy."""
    return (f"Lift flat images (minimum energy {min_energy:g}, this model's own setting, on by default): flat-colour drawings and "
            "plain backgrounds, which the texture budget alone leaves almost untouched, get a minimum of protection, written "
            "blue-yellow only (no change of brightness); a faint colour pattern can show on their flat areas when zoomed in")


# WCAG AA: help and caption text at ≥ 4.5:1 on white (slate-600 #475569 on #fff is 7.6:1).
# Indigo-600/700/800 where Soft uses indigo-400/500 behind or as text (white on #6366f1 is 4.47:1).
THEME = gr.themes.Soft().set(
    body_text_color_subdued="#475569", block_info_text_color="#475569", block_label_text_color="#1e293b",
    block_title_text_color="#3730a3", body_text_color_subdued_dark="#cbd5e1", block_info_text_color_dark="#cbd5e1",
    button_primary_background_fill="#4f46e5", button_primary_background_fill_hover="#4338ca",
    checkbox_label_background_fill_selected="#4f46e5", link_text_color="#4338ca",
)
CSS = """
/* phones: every tab by name, wrapped onto a second line instead of an unlabelled "More tabs" menu.
   Gradio moves the tabs that overflow (measured on a hidden copy of the bar) into that menu: the
   hidden copy's buttons are made 1 px wide so every tab stays in the bar, which then wraps. */
.tab-container.visually-hidden button { width: 1px !important; min-width: 0 !important; padding: 0 !important; font-size: 1px !important; }
.tab-wrapper { height: auto !important; }
.tab-container[role=tablist] { flex-wrap: wrap !important; height: auto !important; row-gap: 2px; }
.overflow-menu { display: none !important; }
/* tables: numbers are never broken mid-digit; a wide table scrolls sideways instead */
.prose table { display: block; overflow-x: auto; width: fit-content; max-width: 100%; border: 0 !important; }  /* the cells carry the lines: no second frame */
.prose td, .prose th { white-space: nowrap; }
.prose td:last-child { white-space: normal; min-width: 14em; }
#batch-report td, #batch-report th { white-space: nowrap; }
#batch-report td:last-child { white-space: normal; min-width: 20em; }
/* the before/after slider: Gradio centres the "before" half in the flow but pins the "after" half to the top,
   so a picture taller than the box showed its halves up to 85 px apart. Both halves fill the same box, the
   picture fitted inside it (object-fit: contain), so they line up pixel for pixel at every size. */
#before-after .slider-wrap, #before-after .wrap, #before-after .content { height: 100% !important; }
#before-after .content { position: relative !important; }
#before-after .content img { position: absolute !important; inset: 0 !important; width: 100% !important; height: 100% !important;
  max-height: none !important; max-width: none !important; margin: 0 !important; object-fit: contain !important; }
/* before any result the download box is one line high, not Gradio's 236 px placeholder: the examples stay in
   the first screen at 1366×900 (the hint above them says "click an example below") */
#protected-file .empty, #batch-zip .empty { min-height: 48px !important; height: 48px !important; }
/* the target captions (low / mid / high) are never cut off */
#targets .caption-label { white-space: nowrap; overflow: visible; text-overflow: clip; opacity: 1 !important; }
#targets .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
#targets .thumbnail-item { width: 100% !important; height: auto !important; aspect-ratio: 1; }
#targets label[data-testid=block-label] { position: static !important; margin-bottom: 4px; }
#targets .grid-wrap { height: auto !important; }
#targets { height: auto !important; }
#verdict { font-size: 1.05em; }
.tab-container button.selected { color: #4338ca !important; }
h1 { margin: 0 0 .2em 0 !important; font-size: 1.5em !important; }
/* phones: a shorter image box, so that Protect is on the first screen at 390×844 (its bottom edge sat at 865 px
   with the 250 px box, 805 px with this one, measured on the real Space after its models loaded) */
@media (max-width: 640px) { #protect-input { height: 190px !important; } }
"""
NO_GPU = (
    "**Disabled here: this machine has no GPU.** On a GPU Space this {does} with {family}, with the "
    "same seed for your clean and your protected images; on a CPU it would take tens of minutes, so "
    "the button is off."
)
NO_GPU_DOES = {"img2img": "edits both images side by side", "duel": "trains one LoRA on each set and samples both"}


def _visitor_errors(handler):
    """A handler, or a generator of outputs, whose :class:`VisitorError` becomes a short message on the page (no trace)."""
    if inspect.isgenerator(handler):
        def stream():
            try:
                yield from handler
            except VisitorError as error:
                raise gr.Error(str(error), print_exception=False) from None

        return stream()

    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except VisitorError as error:
            raise gr.Error(str(error), print_exception=False) from None

    return run


def build_demo(
    loaded: space.LoadOutcome | space.BackgroundLoad | Any,
    *,
    limits: SpaceLimits | None = None,
    workspace: space.Workspace | None = None,
    mimic: Any | None = None,
    attack_note: str | None = None,
    examples: bool = True,
    sweeper: privacy.Sweeper | None = None,
) -> gr.Blocks:
    """The whole Space: a header and one builder per tab. ``loaded``: a LoadOutcome, a
    :class:`webapp.space.BackgroundLoad` (the page answers while the models load), or a Protector (tests).

    ``mimic``: an :class:`attack.mimic.Mimic` enabling img2img, the LoRA duel and the mimic's own
    VAE round trip (None: those two are shown disabled, with ``attack_note`` saying why). ``sweeper``: the privacy
    timer (:func:`webapp.privacy.guard`), which then also drops the verdict's in-memory copies by age.
    """
    if not isinstance(loaded, (space.LoadOutcome, space.BackgroundLoad)):
        loaded = space.LoadOutcome(loaded)
    ctx = SpaceContext(loaded, workspace or space.Workspace(), limits or SpaceLimits.from_environment(), mimic)
    if sweeper is not None:
        sweeper.also.append(ctx.references.prune)  # the verdict's in-memory copies age like the files
    facts = loaded.facts if isinstance(loaded, space.BackgroundLoad) else space.CheckpointFacts.of(loaded.protector)
    can_protect = isinstance(loaded, space.BackgroundLoad) or loaded.protector is not None
    family = handlers.family_name(ctx.family)
    with gr.Blocks(title="FastProtect", delete_cache=ctx.limits.delete_cache) as demo:
        status = _header(ctx, facts)
        last_protected = gr.State(None)  # what the last result was made from: the Mimic's view's source
        batch_pairs = gr.State([])
        with gr.Tab(TABS["protect"], id="protect"):
            _protect_tab(ctx, facts, last_protected, examples=examples and can_protect)
        with gr.Tab(TABS["mimic"], id="mimic"):
            _mimic_tab(ctx, family, last_protected, attack_note)
        with gr.Tab(TABS["duel"], id="duel"):
            _duel_tab(ctx, family, batch_pairs, attack_note)
        with gr.Tab(TABS["batch"], id="batch"):
            _batch_tab(ctx, facts, batch_pairs)
        with gr.Tab(TABS["about"], id="about"):
            about = gr.Markdown(_about_markdown(ctx), elem_id="about")
        if isinstance(loaded, space.BackgroundLoad):  # each visit: the real status and About once the models are in
            demo.load(lambda: (_status_markdown(ctx.outcome), _about_markdown(ctx)), None, [status, about],
                      api_visibility="private", show_progress="hidden")
    demo.space_context = ctx  # for tests and main(): the workspace to clean up
    return demo


def _progress(progress: gr.Progress):
    return lambda fraction, stage: progress(fraction, desc=stage)


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _header(ctx: SpaceContext, facts: space.CheckpointFacts) -> gr.Markdown:
    """The title, one plain sentence that names the network the numbers come from, and the load status."""
    encoder = AUTOENCODER_DISPLAY_NAMES.get(facts.encoder_kind, facts.encoder_kind)
    gr.Markdown(f"# {TITLE}\nAdds a small change to your image so that image models which learn from it or edit it pick up a "
                f"pattern instead of your picture. Every number here is measured with {encoder}, not with "
                f"{handlers.family_name(ctx.family)} itself. [Paper]({PAPER_URL}) · what it cannot do: **About**.", elem_id="headline")
    pending = isinstance(ctx.loaded, space.BackgroundLoad) and not ctx.loaded.ready
    return gr.Markdown(LOADING if pending else _status_markdown(ctx.outcome), elem_id="status")


def _protect_tab(ctx: SpaceContext, facts: space.CheckpointFacts, last_protected: gr.State, *, examples: bool) -> None:
    limits = ctx.limits
    has_lift = facts.method == "generator" and facts.min_energy > 0
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            image_in = gr.Image(label="Your image", type="filepath", image_mode=None, sources=["upload", "clipboard"], height=250, elem_id="protect-input")
            strength_in = gr.Radio(
                [(name, levels) for name, levels, _ in PRESETS], value=DEFAULT_ETA_LEVELS, label="Strength",
                info="How different the result looks, measured on 16 test images (0 = identical): "
                     + ", ".join(f"{name} {lpips:.2f}" for name, _, lpips in PRESETS) + ". The terms are explained under Details.",
                elem_id="strength",
            )
            protect_button = gr.Button("Protect", variant="primary", elem_id="protect-button")
            with gr.Accordion("Advanced: target pattern, adaptive strength, refine steps", open=False, elem_id="advanced"):
                target_in = gr.Radio(list(TARGET_CHOICES), value="auto", label="Target pattern", info=_target_info(facts), elem_id="target")
                targets = gr.Gallery(_target_gallery(), label="Target patterns, left to right: low, mid, high (click one to select it)", show_label=True, columns=3, height=200, format="png", elem_id="targets", interactive=False, allow_preview=False, buttons=[])
                adaptive_in = gr.Checkbox(True, label=_adaptive_label(facts), elem_id="adaptive")
                refine_in = gr.Slider(0, MAX_REFINE_STEPS, value=0, step=1, label=f"Refine steps (0–{MAX_REFINE_STEPS}; extra optimisation after the one-shot protection: stronger, slower)", elem_id="refine")
                lift_in = gr.Checkbox(has_lift, label=lift_label(facts.min_energy), visible=has_lift, elem_id="lift-flat")
        with gr.Column(scale=1, min_width=300):
            verdict_md = gr.Markdown("Upload an image (or click an example below), choose a strength, press **Protect**.", elem_id="verdict")
            file_out = gr.File(label="Download: protected PNG, full resolution", elem_id="protected-file", height=60)
            slider_out = gr.ImageSlider(label="Before / after (drag the bar)", type="filepath", image_mode=None, height=330, elem_id="before-after")
    with gr.Accordion("Details: every number, what it means, and the perturbation", open=False, elem_id="details"):
        details_md = gr.Markdown(elem_id="info-record")
        with gr.Row():
            delta_out = gr.Image(label="Perturbation, amplified: grey = unchanged (of a large image, every k-th pixel)", format="png", type="pil", elem_id="perturbation")
            map_out = gr.Image(label=_map_label(facts), format="png", type="pil", elem_id="lpips-map")
        info_out = gr.JSON(label="Info record (as the API returns it)", elem_id="info-json")
    outputs = [verdict_md, file_out, slider_out, details_md, delta_out, map_out, info_out, last_protected]
    settings = [strength_in, target_in, adaptive_in, refine_in, lift_in]

    def protect(image, eta_levels, target, adaptive, refine_steps, lift_flat=None, request: gr.Request = None, progress=gr.Progress()):
        steps = handlers.protect_steps(ctx, image, eta_levels, target, adaptive, refine_steps, lift_flat,
                                       progress=_progress(progress), session=_session(request))
        yield from map(tuple, _visitor_errors(steps))

    def protect_example(image, request: gr.Request = None, progress=gr.Progress()):  # our own pictures, default settings
        steps = handlers.protect_steps(ctx, image, DEFAULT_ETA_LEVELS, "auto", True, 0, progress=_progress(progress), session=_session(request))
        yield from map(tuple, _visitor_errors(steps))

    def new_image(image, request: gr.Request = None):  # a new upload or a cleared box: nothing of the previous image stays
        ctx.sessions.update(_session(request), upload=handlers.upload_key(image))
        return tuple(handlers.reset_outputs())

    def settings_changed(eta_levels, target, adaptive, refine_steps, lift_flat, last, request: gr.Request = None):
        """Record the page's settings; a result on show made with others is marked as such."""
        now = handlers.page_settings(ctx, eta_levels, target, adaptive, refine_steps, lift_flat) if _is_ready(ctx) else None
        ctx.sessions.update(_session(request), settings=now)
        if not last:
            return gr.skip()
        return handlers.marked(last["verdict_markdown"], last["settings"], now)

    protect_button.click(None, None, None, js=SCROLL_TO_RESULT_JS)
    protect_button.click(protect, [image_in, *settings], outputs, api_name="protect", concurrency_limit=limits.concurrency,
                         preprocess=False, scroll_to_output=True)
    for event in (image_in.upload, image_in.clear):
        event(new_image, image_in, outputs, api_visibility="private", queue=False, preprocess=False)
    def record_image(image, request: gr.Request = None):  # an example fills the box without an upload event
        ctx.sessions.update(_session(request), upload=handlers.upload_key(image))
        # while the visitor chooses the settings, the verdict's clean half on a background thread (not the queue)
        handlers.prepare_verdict(ctx, image)

    image_in.change(record_image, image_in, None, api_visibility="private", queue=False, preprocess=False)
    for control in settings:
        control.change(settings_changed, [*settings, last_protected], verdict_md, api_visibility="private", queue=False)
    def pick_target(event: gr.SelectData):
        return TARGET_NAMES[event.index]

    targets.select(pick_target, None, target_in, api_visibility="private", queue=False)
    if examples:
        paths = make_example_images(ctx.workspace.root / "examples")
        gr.Examples([[str(path)] for path in paths], inputs=[image_in], outputs=outputs, fn=protect_example, cache_examples=False, run_on_click=True,
                    label=EXAMPLE_CREDIT, example_labels=[EXAMPLE_LABELS.get(path.stem, path.stem) for path in paths], preprocess=False, api_name=False)


def _is_ready(ctx: SpaceContext) -> bool:
    return not isinstance(ctx.loaded, space.BackgroundLoad) or ctx.loaded.ready


def _mimic_tab(ctx: SpaceContext, family: str, last_protected: gr.State, attack_note: str | None) -> None:
    gr.Markdown(f"Every fine-tune and every edit starts by encoding the image with an autoencoder. Below: its view (encode, then decode) of your last protected image and of its clean original, with **{handlers.round_trip_caption(ctx) if _is_ready(ctx) else 'the autoencoder the protection was computed against'}**. A protected image's view should show the target pattern.", elem_id="mimic-intro")
    rt_button = gr.Button("Show the round trip of my last protected image", elem_id="roundtrip-button")
    with gr.Row():
        rt_clean = gr.Image(label="Clean image, as the autoencoder sees it", format="png", type="pil", elem_id="roundtrip-clean")
        rt_protected = gr.Image(label="Protected image, as the autoencoder sees it", format="png", type="pil", elem_id="roundtrip-protected")
    rt_md = gr.Markdown(handlers.showing(None), elem_id="roundtrip-numbers")

    def round_trip(last, progress=gr.Progress()):
        return tuple(_visitor_errors(handlers.round_trip)(ctx, last, progress=_progress(progress)))

    if ctx.mimic is not None:  # only the proofs attach a GPU on ZeroGPU; protection runs on the CPU (docs/SPACE.md)
        round_trip = space.gpu_decorator(GPU_SECONDS["round_trip"])(round_trip)
    rt_button.click(round_trip, [last_protected], [rt_clean, rt_protected, rt_md], api_name="round_trip", concurrency_limit=ctx.limits.concurrency)
    # A new result (or none) replaces whatever round trip was on show: the view never shows another image's.
    last_protected.change(lambda last: (None, None, handlers.showing(last)), last_protected, [rt_clean, rt_protected, rt_md],
                          api_visibility="private", queue=False)

    def img2img(last, prompt, strength):
        return _visitor_errors(handlers.img2img)(ctx, last, prompt, strength)

    gr.Markdown(f"### img2img with {family} (same prompt and seed for both)")
    if not ctx.attacks_on:
        gr.Markdown(attack_note or NO_GPU.format(family=family, does=NO_GPU_DOES["img2img"]), elem_id="img2img-disabled")
    with gr.Row():
        prompt_in = gr.Textbox("a high quality, detailed image", label="Prompt", interactive=ctx.attacks_on)
        strength_i2i = gr.Slider(0.1, 1.0, value=0.5, step=0.05, label="img2img strength (SDEdit)" if ctx.family == "sd-1.5" else "img2img strength (SDEdit only; the FLUX.2 reference edit ignores it)", interactive=ctx.attacks_on)
    i2i_button = gr.Button("Run img2img on both", interactive=ctx.attacks_on)
    with gr.Row():
        i2i_clean = gr.Image(label="img2img of the clean image", format="png", type="pil")
        i2i_protected = gr.Image(label="img2img of the protected image", format="png", type="pil")
    i2i_button.click(space.gpu_decorator(GPU_SECONDS["img2img"])(img2img), [last_protected, prompt_in, strength_i2i],
                     [i2i_clean, i2i_protected], api_name="img2img", concurrency_limit=1)


def _duel_tab(ctx: SpaceContext, family: str, batch_pairs: gr.State, attack_note: str | None) -> None:
    low, high = ctx.limits.duel_images
    gr.Markdown(f"Train a quick LoRA on {family} (same seed and settings) on {low}–{high} clean images and on their protected copies, then sample both. If the protection works, the protected LoRA's samples show the target pattern instead of your subject or style.")
    if not ctx.attacks_on:
        gr.Markdown(attack_note or NO_GPU.format(family=family, does=NO_GPU_DOES["duel"]), elem_id="duel-disabled")
    duel_files = gr.File(label=f"{low}–{high} images of one subject or style", file_count="multiple", interactive=ctx.attacks_on)
    reuse_in = gr.Checkbox(False, label="Reuse my protected batch (from the Batch tab) instead", interactive=ctx.attacks_on)
    steps_in = gr.Slider(50, 400, value=200, step=50, label="Training steps per LoRA", interactive=ctx.attacks_on)
    duel_button = gr.Button("Start the duel", variant="primary", interactive=ctx.attacks_on)
    duel_grid = gr.Image(label="Rows: clean inputs · protected inputs · clean-LoRA samples · protected-LoRA samples", format="png", type="pil")
    duel_scores = gr.JSON(label="Comparison numbers (nearest_training_lpips: higher = worse mimicry)")

    def duel(files, reuse_batch, pairs, steps, progress=gr.Progress()):
        return _visitor_errors(handlers.duel)(ctx, files, reuse_batch, pairs, steps, progress=_progress(progress))

    duel_button.click(space.gpu_decorator(GPU_SECONDS["duel"])(duel), [duel_files, reuse_in, batch_pairs, steps_in],
                      [duel_grid, duel_scores], api_name="lora_duel", concurrency_limit=1)


def _batch_tab(ctx: SpaceContext, facts: space.CheckpointFacts, batch_pairs: gr.State) -> None:
    limits = ctx.limits
    has_lift = facts.method == "generator" and facts.min_energy > 0
    gr.Markdown(f"Up to {limits.max_batch_files} images ({limits.batch_max_pixels / 1e6:.0f} MP in all) in, one ZIP of protected PNGs out, with a report (also inside the ZIP). Files that cannot be read are listed and skipped; the others are kept. Change the strength and press the button again to re-run the same files.")
    batch_in = gr.File(label="Images", file_count="multiple", elem_id="batch-input")
    with gr.Row():
        batch_eta = gr.Radio([(name, levels) for name, levels, _ in PRESETS], value=DEFAULT_ETA_LEVELS, label="Strength", elem_id="batch-strength")
        batch_target = gr.Radio(list(TARGET_CHOICES), value="auto", label="Target pattern")
        batch_adaptive = gr.Checkbox(True, label="Adaptive strength")
    batch_lift = gr.Checkbox(has_lift, label=lift_label(facts.min_energy), visible=has_lift, elem_id="batch-lift-flat")
    batch_button = gr.Button("Protect all", variant="primary", elem_id="batch-button")
    zip_out = gr.File(label="protected.zip", elem_id="batch-zip")
    report_out = gr.Dataframe(headers=list(space.REPORT_FIELDS), label="Report", interactive=False, wrap=True, elem_id="batch-report")

    def batch(files, eta_levels, target, adaptive, lift_flat=None, progress=gr.Progress()):
        out = _visitor_errors(handlers.batch)(ctx, files, eta_levels, target, adaptive, lift_flat, progress=_progress(progress))
        if out.warning:
            gr.Warning(out.warning, duration=None)  # whole, and until closed: the table cell may be narrow
        return out.zip_path, out.report, out.pairs

    batch_button.click(batch, [batch_in, batch_eta, batch_target, batch_adaptive, batch_lift], [zip_out, report_out, batch_pairs],
                       api_name="batch", concurrency_limit=limits.concurrency, preprocess=False)


def launch(demo: gr.Blocks, limits: SpaceLimits, **options: Any) -> Any:
    """``demo.queue(...).launch(...)`` with the Space's theme, CSS and limits (tests use it too)."""
    demo.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency)
    defaults = {"max_file_size": limits.max_file_size, "allowed_paths": [], "show_error": True, "theme": THEME, "css": CSS, "ssr_mode": False}
    return demo.launch(**{**defaults, **options})


# ------------------------------------------------------------------------------- page text
def _status_markdown(loaded: space.LoadOutcome) -> str:
    if loaded.protector is None:
        return (
            "### ⚠️ Protection is unavailable on this server\n"
            f"The models could not be loaded: `{loaded.error}`\n\n"
            "The server has no network access to the Hugging Face Hub and no local copy of the weights. "
            "Set `FASTPROTECT_CHECKPOINT` (generator or mixture checkpoint) and `FASTPROTECT_ENCODER_SOURCE` (autoencoder) to local folders and restart."
        )
    if loaded.protector.mode == "per-image":
        return "ℹ️ **No pre-trained checkpoint found: running per-image protection (PGD on each image).** It works, but takes seconds to minutes instead of a fraction of a second."
    return ""


def _map_label(facts: space.CheckpointFacts) -> str:
    if facts.method == "generator":
        return "Texture budget: bright = where the change may go (flat areas get almost none)"
    return "Visibility map: bright = more visible"


def _adaptive_label(facts: space.CheckpointFacts) -> str:
    if facts.method == "generator":
        return "Adaptive strength (the paper's mixture method only: the generator places its change by texture itself)"
    return "Adaptive strength (less change where the eye would notice it; needs LPIPS)"


def _target_info(facts: space.CheckpointFacts) -> str:
    if facts.method == "generator":
        return f"the generator was trained towards '{facts.target}' (auto); another pattern steers only the refine steps"
    return "auto picks the pattern closest to your image (least change needed); or click a pattern below"


def _target_gallery() -> list[tuple[Any, str]]:
    patterns = target_patterns(256)  # the same patterns every protector pulls towards (fastprotect.targets)
    return [(space.tensor_to_pil(patterns[index : index + 1]), name) for index, name in enumerate(TARGET_NAMES)]


def _about_markdown(ctx: handlers.SpaceContext) -> str:
    if not _is_ready(ctx):
        models, encoder = "- the models are loading (this page updates when they are in)", "the protector's autoencoder"
    else:
        loaded = ctx.outcome
        if loaded.protector is not None:
            described = space.describe_protector(loaded.protector, loaded.details)
            models = "\n".join(f"- **{key}**: {value}" for key, value in described.items())
        else:
            models = f"- nothing loaded: `{loaded.error}`"
        encoder = handlers.autoencoder_name(loaded.protector)
    return f"""
## What protection does
It adds a perturbation of at most η per pixel (8/255 by default; how visible it is on your image is
measured and shown with each result) that pulls the image's latent, as {encoder} sees it, towards a
*target pattern*. A LoRA or
DreamBooth fine-tune, or an img2img edit, then works from the pattern instead of your subject or
style, and its outputs show the pattern.

## What it does **not** guarantee
- **It can be removed.** Every known perturbation protection, this one included, can be stripped by
  *purification*: noisy upscaling, strong JPEG compression, diffusion-based cleaning, or re-drawing.
  Protection **raises the cost of mimicry; it is not a lock.**
- It targets latent-diffusion models whose encoder resembles the one it was trained against;
  models with a different encoder, or future ones, may not be affected.
- It does not hide the image, stop anyone from copying it, or prove ownership.

## The method
Built on FastProtect (Ahn et al., CVPR 2025, *Nearly Zero-Cost Protection Against Mimicry by Personalized
Diffusion Models*, [arXiv 2412.11423]({PAPER_URL})), re-implemented without official code. The default here is
a small pre-trained **perturbation generator**: one forward pass writes a change that pulls the encoder's view of
the image towards a target pattern, placed where the image hides it (a computed texture budget: almost nothing in
flat skies and skin, the full budget in texture and edges) and capped in energy, with no optimisation per image.
An image with almost no texture (a flat-colour drawing, a plain background) gets a minimum energy instead, written
blue-yellow only, with no change of brightness ("Lift flat images", on by default): a faint colour pattern can show
on its flat areas when zoomed in side by side.
The paper's *mixture of perturbations* (one global and K group patterns per target, chosen by the image's latent,
shaped by an LPIPS visibility map) is the other bundled checkpoint (`--method mixture` on the command line).
Without any checkpoint the Space falls back to per-image PGD on the same loss. Optional refine steps add PGD after
the one-shot step.

## Loaded here
{models}
- **mimic family the proofs run**: {handlers.family_name(ctx.family)} ({'loaded on the GPU' if ctx.attacks_on else 'not loaded: no GPU here'})
- **what the numbers are measured with**: {encoder}; the page makes no claim about {handlers.family_name(ctx.family)} itself

## Privacy
{privacy.privacy_markdown(ctx.limits)}

## Licence
Code: MIT. The example images are drawn procedurally at start-up (CC0).
"""



# --------------------------------------------------------------------------- entry point
def load_mimic_once(family: str) -> tuple[Any | None, str | None]:
    """The mimic family's models for the proofs, loaded once at start-up, only with a GPU."""
    if not (torch.cuda.is_available() or ZERO_GPU):
        return None, None
    try:
        from attack.mimic import load_mimic

        return load_mimic(family, base=environment.get("FASTPROTECT_MIMIC_BASE"), device="cuda"), None
    except Exception as error:  # the Space still protects; the proof tabs explain
        return None, f"**Disabled: {handlers.family_name(family)} could not be loaded** (`{type(error).__name__}: {str(error).splitlines()[0]}`)."


def main() -> tuple[gr.Blocks, SpaceLimits]:
    """The Space, built before its models are loaded: they load in a thread (the page says so, and a
    request waits for them), so the page answers before the models are in (start-up measured in docs/SPACE.md)."""
    limits = SpaceLimits.from_environment()
    workspace = space.Workspace()
    # Before any page is built: the workspace becomes Gradio's cache, and the timer, the signal handlers
    # and the clean-up of crashed earlier runs start (webapp/privacy.py, the About tab's promises).
    sweeper = privacy.guard(workspace, limits)
    # On ZeroGPU a model moved to CUDA at start-up cannot run outside a decorated function: CPU.
    device = "cuda" if torch.cuda.is_available() and not ZERO_GPU else "cpu"
    facts = space.CheckpointFacts.read()
    loaded = space.BackgroundLoad(lambda: space.load_space_protector(device=device, **PER_IMAGE_OPTIONS), facts)
    mimic, note = load_mimic_once(facts.family)  # a GPU only; returns at once on a CPU
    demo = build_demo(loaded, limits=limits, workspace=workspace, mimic=mimic, attack_note=note, sweeper=sweeper)
    workspace.keep_page_files()  # the target thumbnails Gradio just wrote are the page's, not a visitor's: never swept
    return demo, limits


if __name__ == "__main__":
    launch(*main())
