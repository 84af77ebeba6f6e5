"""FastProtect Space: protect images against diffusion-model mimicry, and watch a mimic fail.

Thin by design: constants, ``build_demo(loaded, ...)`` and short handlers. Models are loaded once
in ``main()`` (never per request, never at import); every file the page serves is written below
one private ``tempfile.mkdtemp`` folder (``fastprotect.space.Workspace``). ML and file logic live
in the library (``fastprotect``, ``fastprotect.space``, ``attack``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

# Before torch is imported: idle OpenMP threads sleep instead of spinning, which keeps latency sane
# when a Space's vCPUs are shared (docs/BENCHMARKS.md, "OMP_WAIT_POLICY").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from attack import views  # noqa: E402
from fastprotect import environment, space  # noqa: E402
from fastprotect.examples import EXAMPLE_CREDIT, make_example_images  # noqa: E402
from fastprotect.images import ImageError, load_image  # noqa: E402
from fastprotect.targets import target_patterns  # noqa: E402
from fastprotect.vocabulary import AUTOENCODER_DISPLAY_NAMES, DEFAULT_ETA_LEVELS, MAX_ETA_LEVELS, MAX_REFINE_STEPS, TARGET_CHOICES, TARGET_NAMES  # noqa: E402

logger = logging.getLogger("fastprotect.app")
TITLE = "FastProtect: near zero-cost protection against diffusion mimicry"
PAPER_URL = "https://arxiv.org/abs/2412.11423"
MAX_FILE_SIZE = environment.get("FASTPROTECT_MAX_FILE_SIZE") or "25mb"  # per uploaded file, enforced by Gradio
MAX_PIXELS = environment.get_int("FASTPROTECT_SPACE_MAX_PIXELS", 24_000_000)  # decoded size, enforced by the library
MAX_BATCH_FILES = environment.get_int("FASTPROTECT_MAX_BATCH_FILES", 20)
DUEL_IMAGES = (4, 8)
CONCURRENCY_LIMIT = environment.get_int("FASTPROTECT_CONCURRENCY", 2)  # per event; CPU-bound work
QUEUE_SIZE = environment.get_int("FASTPROTECT_QUEUE_SIZE", 32)
DELETE_CACHE = (1800, 3600)  # Gradio's own cache: every 30 min, files older than 1 h
WORKSPACE_MAX_AGE_S = 3600
ROUND_TRIP_MAX_SIDE = 512  # the "instant" check: long side of the copy the VAE round trip runs on
# Per-image mode (no mixture found) runs PGD on a copy this size, for this many steps: about
# 20 s on a 2-core CPU with TAEF2 instead of minutes at full size.
PER_IMAGE_OPTIONS = {"work_size": 256, "per_image_steps": 20}
GPU_SECONDS = {"protect": 30, "batch": 120, "img2img": 60, "duel": 300}  # ZeroGPU reservations
SD_BASE = environment.get("FASTPROTECT_MIMIC_BASE") or "stable-diffusion-v1-5/stable-diffusion-v1-5"
NO_GPU = (
    "**Disabled here: this machine has no GPU.** On a GPU Space this runs Stable Diffusion 1.5 on "
    "your clean and protected images with the same seed, side by side. On a CPU it would take "
    "tens of minutes per image, so the button is off; the round trip above shows the same effect "
    "at its source (the VAE encoder every mimic starts from)."
)


@dataclass
class Context:
    """What the handlers share: the loaded protector (or why there is none), temp space, attack models."""

    loaded: space.LoadOutcome
    workspace: space.Workspace
    attack_pipe: Any | None = None  # a diffusers StableDiffusionPipeline, on the GPU
    attack_note: str = NO_GPU

    @property
    def attacks_on(self) -> bool:
        return self.attack_pipe is not None


def _fail(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


def _progress(progress: gr.Progress):
    return lambda fraction, stage: progress(fraction, desc=stage)


def build_demo(
    loaded: space.LoadOutcome | Any,
    *,
    workspace: space.Workspace | None = None,
    attack_pipe: Any | None = None,
    attack_note: str | None = None,
    examples: bool = True,
) -> gr.Blocks:
    """The whole Space. ``loaded``: a LoadOutcome, or a Protector (tests pass tiny models).

    ``attack_pipe``: an SD pipeline enabling img2img and the LoRA duel (None: those are shown
    disabled, with ``attack_note`` saying why).
    """
    if not isinstance(loaded, space.LoadOutcome):
        loaded = space.LoadOutcome(loaded)
    ctx = Context(loaded, workspace or space.Workspace(), attack_pipe)
    if attack_note or attack_pipe is None:
        ctx.attack_note = attack_note or NO_GPU
    protector = loaded.protector

    def need_protector():
        if protector is None:
            raise _fail(f"Protection is unavailable: the models could not be loaded. {loaded.error}")
        return protector

    def options(eta_levels, target, adaptive, refine_steps) -> space.ProtectOptions:
        try:
            return space.ProtectOptions(int(eta_levels), str(target), bool(adaptive), int(refine_steps or 0))
        except (TypeError, ValueError) as error:
            raise _fail(str(error)) from None

    # ------------------------------------------------------------------------- handlers
    def protect(image, eta_levels, target, adaptive, refine_steps, progress=gr.Progress()):
        """Protect one image: PNG file, before/after pair, amplified δ, LPIPS map, info record."""
        upload = space.uploaded_path(image)
        if upload is None:
            raise _fail("Upload an image first.")
        chosen, model = options(eta_levels, target, adaptive, refine_steps), need_protector()
        ctx.workspace.sweep(WORKSPACE_MAX_AGE_S)
        try:
            outcome = space.protect_upload(
                model, upload[0], chosen, ctx.workspace.new_dir("protect"), name=upload[1],
                max_pixels=MAX_PIXELS, progress=_progress(progress),
            )
        except (ImageError, space.SpaceInputError) as error:
            raise _fail(f"{upload[1]}: {error}") from None
        except Exception as error:  # a bug, not the visitor's fault: logged, and a short message
            logger.exception("protect failed on %r", upload[1])
            raise _fail(f"{upload[1]}: protection failed ({type(error).__name__}). Please try another image.") from None
        last = {"clean": upload[0], "protected": str(outcome.png_path)}
        return (
            str(outcome.png_path), (outcome.original, outcome.protected), outcome.perturbation_view,
            outcome.lpips_map_view, outcome.info, space.info_markdown(outcome.info), last,
        )

    def protect_example(image):
        return protect(image, DEFAULT_ETA_LEVELS, "auto", True, 0)[:-1]

    def batch(files, eta_levels, target, adaptive, progress=gr.Progress()):
        """Protect many files into a ZIP of PNGs plus a per-file report; bad files are listed."""
        uploads = [upload for upload in map(space.uploaded_path, files or []) if upload is not None]
        chosen, model = options(eta_levels, target, adaptive, 0), need_protector()
        ctx.workspace.sweep(WORKSPACE_MAX_AGE_S)
        try:
            outcome = space.protect_batch(
                model, uploads, chosen, ctx.workspace.new_dir("batch"), max_files=MAX_BATCH_FILES,
                max_pixels=MAX_PIXELS, progress=_progress(progress),
            )
        except space.SpaceInputError as error:
            raise _fail(str(error)) from None
        if outcome.failures:
            gr.Warning(f"{len(outcome.failures)} of {len(outcome.rows)} files could not be protected: see the report.")
        pairs = [[str(clean), str(png)] for clean, png in outcome.protected]
        return str(outcome.zip_path), space.report_table(outcome.rows), pairs

    def round_trip(last, progress=gr.Progress()):
        """VAE round trip (decode(encode(x))) of the last protected image and of its clean original."""
        if not last:
            raise _fail("Protect an image in the Protect tab first; its clean and protected copies are compared here.")
        progress(0.2, desc="encoding and decoding")
        seen = views.mimic_round_trip(need_protector(), load_image(last["clean"]), load_image(last["protected"]), max_side=ROUND_TRIP_MAX_SIDE)
        return seen.clean, seen.protected, seen.markdown

    def img2img(last, prompt, strength, progress=gr.Progress()):
        if not ctx.attacks_on:
            raise _fail("img2img needs a GPU, and this machine has none.")
        if not last:
            raise _fail("Protect an image in the Protect tab first.")
        progress(0.1, desc="img2img on clean and protected copies")
        clean, protected = views.mimic_img2img(ctx.attack_pipe, load_image(last["clean"]), load_image(last["protected"]), str(prompt), float(strength))
        return clean, protected

    def duel(files, reuse_batch, batch_pairs, steps, progress=gr.Progress()):
        if not ctx.attacks_on:
            raise _fail("The LoRA duel needs a GPU, and this machine has none.")
        try:
            if reuse_batch:
                pairs = [(clean, png) for clean, png in (batch_pairs or [])]
                grid, scores = views.lora_duel_from_pairs(ctx.attack_pipe, pairs, need_protector(), ctx.workspace.new_dir("duel"), int(steps), _progress(progress), limits=DUEL_IMAGES)
            else:
                uploads = [upload for upload in map(space.uploaded_path, files or []) if upload is not None]
                grid, scores = views.lora_duel_from_uploads(ctx.attack_pipe, uploads, need_protector(), ctx.workspace.new_dir("duel"), int(steps), _progress(progress), limits=DUEL_IMAGES, max_pixels=MAX_PIXELS)
        except (ImageError, space.SpaceInputError) as error:
            raise _fail(str(error)) from None
        return grid, scores

    # No-ops without the `spaces` package; on ZeroGPU every handler that touches a model needs one.
    protect = space.gpu_decorator(GPU_SECONDS["protect"])(protect)
    batch = space.gpu_decorator(GPU_SECONDS["batch"])(batch)
    img2img = space.gpu_decorator(GPU_SECONDS["img2img"])(img2img)
    duel = space.gpu_decorator(GPU_SECONDS["duel"])(duel)

    # ----------------------------------------------------------------------------- layout
    with gr.Blocks(title="FastProtect", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(f"# {TITLE}\nA small perturbation (at most η per pixel, measured and shown with every result) that makes the image hard to mimic with LoRA / DreamBooth fine-tuning and img2img. [Paper]({PAPER_URL}) · see the About tab for what it can and cannot do.")
        gr.Markdown(_status_markdown(loaded), elem_id="status")
        last_protected = gr.State(None)
        batch_pairs = gr.State([])

        with gr.Tab("Protect", id="protect"):
            with gr.Row():
                with gr.Column():
                    image_in = gr.Image(label="Your image (PNG, JPEG, WebP, ...; transparency and metadata are kept)", type="filepath", image_mode=None, sources=["upload", "clipboard"], elem_id="protect-input")
                    eta_in = gr.Slider(1, MAX_ETA_LEVELS, value=DEFAULT_ETA_LEVELS, step=1, label="Strength η (of 255 levels per pixel)", info="; ".join(f"{bound}: {text.split(':')[0]}" for bound, text in space.STRENGTH_SCALE))
                    eta_help = gr.Markdown(space.strength_label(DEFAULT_ETA_LEVELS))
                    target_in = gr.Radio(list(TARGET_CHOICES), value="auto", label="Target pattern", info="auto picks the pattern closest to your image (least change needed)")
                    gr.Gallery(_target_gallery(protector), label="The three target patterns (low / mid / high repetition)", columns=3, height=170, format="png", elem_id="targets", interactive=False, allow_preview=False)
                    adaptive_in = gr.Checkbox(True, label="Adaptive strength (less perturbation where the eye would notice it; needs LPIPS)")
                    refine_in = gr.Slider(0, MAX_REFINE_STEPS, value=0, step=1, label="Refine steps (PGD after the one-shot protection: stronger, slower)")
                    protect_button = gr.Button("Protect", variant="primary", elem_id="protect-button")
                with gr.Column():
                    file_out = gr.File(label="Protected PNG (full resolution)", elem_id="protected-file")
                    slider_out = gr.ImageSlider(label="Before / after", format="png", type="pil", image_mode=None, elem_id="before-after")
                    with gr.Row():
                        delta_out = gr.Image(label="Perturbation, amplified (grey = unchanged)", format="png", type="pil", elem_id="perturbation")
                        map_out = gr.Image(label="LPIPS visibility map (bright = more visible)", format="png", type="pil", elem_id="lpips-map")
                    info_md = gr.Markdown(elem_id="info-record")
                    with gr.Accordion("Info record (JSON, as the API returns it)", open=False):
                        info_out = gr.JSON(label="Info record", elem_id="info-json")
            outputs = [file_out, slider_out, delta_out, map_out, info_out, info_md]
            eta_in.change(space.strength_label, eta_in, eta_help, api_visibility="private", queue=False)
            protect_button.click(protect, [image_in, eta_in, target_in, adaptive_in, refine_in], [*outputs, last_protected], api_name="protect", concurrency_limit=CONCURRENCY_LIMIT, preprocess=False)
            if examples and protector is not None:
                paths = make_example_images(ctx.workspace.root / "examples")
                gr.Examples([[str(path)] for path in paths], inputs=[image_in], outputs=outputs, fn=protect_example, cache_examples=True, cache_mode="lazy", label=EXAMPLE_CREDIT)

        with gr.Tab("What a mimic sees", id="mimic"):
            gr.Markdown("Every fine-tune and every img2img edit starts by encoding the image with the VAE. Below: the VAE's view (encode, then decode) of your last protected image and of its clean original. A protected image's view should show the target pattern.")
            rt_button = gr.Button("Show the round trip of my last protected image", elem_id="roundtrip-button")
            with gr.Row():
                rt_clean = gr.Image(label="Clean image, as the model sees it", format="png", type="pil")
                rt_protected = gr.Image(label="Protected image, as the model sees it", format="png", type="pil", elem_id="roundtrip-protected")
            rt_md = gr.Markdown()
            rt_button.click(round_trip, [last_protected], [rt_clean, rt_protected, rt_md], api_name="round_trip", concurrency_limit=CONCURRENCY_LIMIT)
            gr.Markdown("### img2img (Stable Diffusion 1.5, same prompt and seed for both)")
            if not ctx.attacks_on:
                gr.Markdown(ctx.attack_note, elem_id="img2img-disabled")
            with gr.Row():
                prompt_in = gr.Textbox("a high quality, detailed image", label="Prompt", interactive=ctx.attacks_on)
                strength_in = gr.Slider(0.1, 1.0, value=0.5, step=0.05, label="img2img strength", interactive=ctx.attacks_on)
            i2i_button = gr.Button("Run img2img on both", interactive=ctx.attacks_on)
            with gr.Row():
                i2i_clean = gr.Image(label="img2img of the clean image", format="png", type="pil")
                i2i_protected = gr.Image(label="img2img of the protected image", format="png", type="pil")
            i2i_button.click(img2img, [last_protected, prompt_in, strength_in], [i2i_clean, i2i_protected], api_name="img2img", concurrency_limit=1)

        with gr.Tab("LoRA duel", id="duel"):
            gr.Markdown(f"Train a quick LoRA (DreamBooth-style, same seed and settings) on {DUEL_IMAGES[0]}–{DUEL_IMAGES[1]} clean images and on their protected copies, then sample both. If the protection works, the protected LoRA's samples show the target pattern instead of your subject or style.")
            if not ctx.attacks_on:
                gr.Markdown(ctx.attack_note, elem_id="duel-disabled")
            duel_files = gr.File(label=f"{DUEL_IMAGES[0]}–{DUEL_IMAGES[1]} images of one subject or style", file_count="multiple", interactive=ctx.attacks_on)
            reuse_in = gr.Checkbox(False, label="Reuse my protected batch (from the Batch tab) instead", interactive=ctx.attacks_on)
            steps_in = gr.Slider(50, 400, value=200, step=50, label="Training steps per LoRA", interactive=ctx.attacks_on)
            duel_button = gr.Button("Start the duel", variant="primary", interactive=ctx.attacks_on)
            duel_grid = gr.Image(label="Rows: clean inputs · protected inputs · clean-LoRA samples · protected-LoRA samples", format="png", type="pil")
            duel_scores = gr.JSON(label="Comparison numbers (nearest_training_lpips: higher = worse mimicry)")
            duel_button.click(duel, [duel_files, reuse_in, batch_pairs, steps_in], [duel_grid, duel_scores], api_name="lora_duel", concurrency_limit=1)

        with gr.Tab("Batch", id="batch"):
            gr.Markdown(f"Up to {MAX_BATCH_FILES} images in, one ZIP of protected PNGs out, with a report (also inside the ZIP). Files that cannot be read are listed and skipped; the others are kept.")
            batch_in = gr.File(label="Images", file_count="multiple", elem_id="batch-input")
            with gr.Row():
                batch_eta = gr.Slider(1, MAX_ETA_LEVELS, value=DEFAULT_ETA_LEVELS, step=1, label="Strength η (of 255)")
                batch_target = gr.Radio(list(TARGET_CHOICES), value="auto", label="Target pattern")
                batch_adaptive = gr.Checkbox(True, label="Adaptive strength")
            batch_button = gr.Button("Protect all", variant="primary", elem_id="batch-button")
            zip_out = gr.File(label="protected.zip", elem_id="batch-zip")
            report_out = gr.Dataframe(headers=list(space.REPORT_FIELDS), label="Report", interactive=False, elem_id="batch-report")
            batch_button.click(batch, [batch_in, batch_eta, batch_target, batch_adaptive], [zip_out, report_out, batch_pairs], api_name="batch", concurrency_limit=CONCURRENCY_LIMIT, preprocess=False)

        with gr.Tab("About", id="about"):
            gr.Markdown(_about_markdown(loaded), elem_id="about")
    return demo


# ------------------------------------------------------------------------------- page text
def _status_markdown(loaded: space.LoadOutcome) -> str:
    if loaded.protector is None:
        return (
            "### ⚠️ Protection is unavailable on this server\n"
            f"The models could not be loaded: `{loaded.error}`\n\n"
            "The server has no network access to the Hugging Face Hub and no local copy of the weights. "
            "Set `FASTPROTECT_CHECKPOINT` (mixture) and `FASTPROTECT_ENCODER_SOURCE` (autoencoder) to local folders and restart."
        )
    if loaded.protector.mode == "per-image":
        return "ℹ️ **No pre-trained mixture found: running per-image protection (PGD on each image).** It works, but takes seconds to minutes instead of a fraction of a second."
    return ""


def _target_gallery(protector: Any | None) -> list[tuple[Any, str]]:
    patterns = protector.target_images if protector is not None else target_patterns(256)
    return [(space.tensor_to_pil(patterns[index : index + 1]), name) for index, name in enumerate(TARGET_NAMES)]


def _about_markdown(loaded: space.LoadOutcome) -> str:
    if loaded.protector is not None:
        described = space.describe_protector(loaded.protector, loaded.details)
        models = "\n".join(f"- **{key}**: {value}" for key, value in described.items())
    else:
        models = f"- nothing loaded: `{loaded.error}`"
    kind = loaded.protector.autoencoder.kind if loaded.protector is not None else "taef2"
    encoder = AUTOENCODER_DISPLAY_NAMES.get(kind, kind)
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
FastProtect (Ahn et al., CVPR 2025, *Nearly Zero-Cost Protection Against Mimicry by Personalized
Diffusion Models*, [arXiv 2412.11423]({PAPER_URL})), re-implemented without official code: a pre-trained
*mixture of perturbations* (one global and K group perturbations per target pattern) is chosen by the
image's latent, resized to the image, shaped by an LPIPS visibility map (adaptive strength) and
projected to the η budget, all without optimisation. Without a pre-trained mixture the Space falls
back to per-image PGD on the same loss. Optional refine steps add PGD after the one-shot step.

## Loaded here
{models}

## Licence
Code: MIT. The example images are drawn procedurally at start-up (CC0). Uploaded images stay in a
private temporary folder of this server and are deleted within about an hour.
"""


# --------------------------------------------------------------------------- entry point
def load_attack_pipeline() -> tuple[Any | None, str | None]:
    """SD-1.5 for img2img and the LoRA duel, loaded once at start-up, only when a GPU is present."""
    if not torch.cuda.is_available():
        return None, None
    try:
        from attack.pipeline import load_pipeline

        return load_pipeline(SD_BASE, device="cuda"), None
    except Exception as error:  # the Space still protects; the attack tabs explain
        return None, f"**Disabled: the diffusion model could not be loaded** (`{type(error).__name__}: {str(error).splitlines()[0]}`)."


def main() -> gr.Blocks:
    workspace = space.Workspace()
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", str(workspace.root / "cached_examples"))
    loaded = space.load_space_protector(device="cuda" if torch.cuda.is_available() else "cpu", **PER_IMAGE_OPTIONS)
    attack_pipe, attack_note = load_attack_pipeline()
    demo = build_demo(loaded, workspace=workspace, attack_pipe=attack_pipe, attack_note=attack_note)
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)


if __name__ == "__main__":
    main().launch(max_file_size=MAX_FILE_SIZE, allowed_paths=[], show_error=True, theme=gr.themes.Soft())
