"""The model cards (README.md) of mixture and generator checkpoints: one writer for every save.

``MixtureOfPerturbations.generate_model_card`` (the Hub mixin's hook) renders :func:`card_body`,
so every ``save_pretrained`` — a training run's step snapshots, its final folder, an export, a
``push_to_hub`` — gets a card that says what the checkpoint is, whatever is known about it.

``training`` is the trainer's record (``train_info.json``; every key optional): ``steps`` (done so
far), ``total_steps``, ``batch_size``, ``wall_time_s``, ``hardware``, ``train_images``,
``heldout_images``, ``grouping``, ``domains``, ``group_domains``, ``note`` and ``config`` (the
training options: ``lr``, ``lr_schedule``, ``seed``, ``no_assignment``, ``fixed_target``).
``evaluation`` is the markdown report of ``python -m train.evaluate``; without one the card has
no evaluation section.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .generator import GeneratorConfig, psnr_floor_db
from .mixture_config import MixtureConfig
from .vocabulary import MIMIC_DISPLAY_NAMES, TARGET_NAMES, levels_from_eta


def card_metadata() -> dict[str, Any]:
    """The YAML header of every card (the mixture's through the Hub mixin's class arguments). A new
    dict each call: the mixin appends its own tags to the list it is given."""
    return {"library_name": "fastprotect", "license": "mit", "tags": ["image-protection", "adversarial-perturbation"]}


# The evaluation report sits between these markers, so that it can be replaced in place.
EVAL_BEGIN = "<!-- evaluation:begin -->"
EVAL_END = "<!-- evaluation:end -->"
EVALUATION_HEADING = "## Evaluation"
LIMITS_HEADING = "## Limits"

PROXY_NOTE = {
    "taef2": (
        "**This checkpoint was trained against TAEF2**, the tiny autoencoder distilled from the FLUX.2 VAE "
        "(madebyollin/taesd, MIT). TAEF2 *approximates* the FLUX.2 VAE; every number below is measured "
        "against TAEF2 itself and is a real-network **proxy** for the method. It is **not** a Stable Diffusion "
        "result and says nothing direct about SD-1.5's VAE (train an `sd-vae` checkpoint for that, see docs/TRAINING.md)."
    ),
    "taesd": "Trained against TAESD, the tiny autoencoder distilled from the SD-1.5 VAE: a proxy for the SD-1.5 VAE.",
    "sd-vae": "Trained against the Stable Diffusion VAE encoder (posterior mean).",
}
# How the card names each K-means descriptor (fastprotect.mixture_config.DESCRIPTORS).
DESCRIPTOR_WORDS = {"channel-mean-std": "per-channel mean/std", "layout-4x4": "per-channel 4×4 grid means (layout)"}


# How to load any checkpoint folder (generator or mixture): the same three lines in every card.
USE_SECTION = (
    "## Use", "", "```python", "from fastprotect.protect import Protector",
    "protector = Protector.from_pretrained(\"PATH_OR_REPO\")  # this folder, or its Hub repo id",
    "result = protector.protect(\"photo.jpg\")", "```", "",
)


def _opening(what: str, summary: str, config: MixtureConfig | GeneratorConfig) -> list[str]:
    """The lines every card starts with: title, ``summary``, the encoder's proxy note and the table's first rows."""
    family = MIMIC_DISPLAY_NAMES[config.mimic_base]
    subfolder = f" (subfolder `{config.encoder_subfolder}`)" if config.encoder_subfolder else ""
    return [
        f"# FastProtect {what} ({config.encoder_kind}, against {family} mimicry)",
        "",
        summary,
        "",
        PROXY_NOTE[config.encoder_kind],
        "",
        "| | |",
        "|---|---|",
        f"| protects against | mimicry by {family} fine-tuning / img2img (`mimic_base: {config.mimic_base}`) |",
        f"| trained against | the `{config.encoder_kind}` encoder, `{config.encoder_source}`{subfolder} |",
    ]


def _closing(evaluation: str | None, limits: str) -> list[str]:
    """The lines every card ends with: the evaluation report between its markers (when given), then the limits."""
    report = [EVALUATION_HEADING, "", EVAL_BEGIN, evaluation.strip("\n"), EVAL_END, ""] if evaluation else []
    return [*report, LIMITS_HEADING, "", limits, ""]


def _group_table(groups: list[dict[str, int]]) -> str:
    return "; ".join(f"group {k}: " + ", ".join(f"{d} {n}" for d, n in sorted(g.items())) for k, g in enumerate(groups))


def _steps_line(training: Mapping[str, Any]) -> str:
    """"500 steps, batch 4", "20 of 100 steps (a snapshot taken during training), batch 4" or "not recorded"."""
    steps, total = training.get("steps"), training.get("total_steps")
    if steps is None:
        return "not recorded"
    batch = f", batch {training['batch_size']}" if training.get("batch_size") else ""
    if total and steps < total:
        return f"{steps} of {total} steps (a snapshot taken during training){batch}"
    return f"{steps} steps{batch}"


def _training_section(config: MixtureConfig, training: Mapping[str, Any]) -> list[str]:
    options = training.get("config") or {}
    lines = ["## Training", ""]
    if training.get("group_domains"):
        lines.append(f"- training images per group, by domain: {_group_table(training['group_domains'])}")
    lines.append(f"- loss: relative squared error of the latent + λ·mean over encoder feature maps of the same, λ = {config.feature_weight}.")
    if training.get("train_images") is not None:
        lines.append(
            f"- data: {training['train_images']} training images from domains {', '.join(training.get('domains', []))}; "
            f"{training.get('heldout_images')} held out (split by {training.get('grouping')}). "
            + ("Face images (CelebA-HQ / VGGFace2, research-only) were used for training and evaluation only; "
               if "face" in training.get("domains", []) else "")
            + "no image of any kind is shipped with this checkpoint."
        )
    lines.append(
        f"- optimisation: Adam, {_steps_line(training)}, lr {options.get('lr') or 'η/10'} "
        f"({options.get('lr_schedule', 'cosine')}), seed {options.get('seed', 'unknown')}; ablation flags: "
        f"no_assignment={bool(options.get('no_assignment'))}, fixed_target={options.get('fixed_target')}."
    )
    if training.get("wall_time_s") is not None:
        lines.append(f"- wall time: {training['wall_time_s']} s on {training.get('hardware', 'unknown hardware')}.")
    if training.get("note"):
        lines.append(f"- note: {training['note']}")
    return [*lines, ""]


def card_body(config: MixtureConfig, *, dtype: str = "fp32", training: Mapping[str, Any] | None = None, evaluation: str | None = None) -> str:
    """The card's markdown below the YAML header. ``dtype``: how the perturbations are stored."""
    training = training or {}
    eta_levels = levels_from_eta(config.eta)
    lines = [
        *_opening("mixture of perturbations",
                  "A re-implementation of the pre-trained *mixture of perturbations* of FastProtect (Ahn et al., CVPR 2025, "
                  "arXiv 2412.11423; no official code). At inference an image is encoded once, routed to one of "
                  f"{config.num_groups} K-means groups and one of {len(TARGET_NAMES)} target patterns by its latent entropy, and gets "
                  "δ_g^t + Δ_k^t resized to its size, scaled by adaptive strength and projected to the user's L∞ budget.", config),
        f"| budget η | {eta_levels}/255 (L∞; global and group parts within ±η/2 each) |",
        f"| groups | K = {config.num_groups}: K-means++ on the {DESCRIPTOR_WORDS[config.descriptor]} of the latent of a "
        f"{config.assign_size}² copy (standardised) |",
        f"| targets | {', '.join(TARGET_NAMES)}, chosen by the L1 distance of latent entropy signatures |",
        f"| perturbations | {len(TARGET_NAMES)} targets × (1 global + {config.num_groups} group), each 3×{config.size}×{config.size}, "
        f"stored as {dtype} |",
        f"| training | {_steps_line(training)} |",
        "| licence | MIT |",
        "",
        *USE_SECTION,
        f"Weights are looked up in this order: argument → environment variable → files bundled in this folder → the "
        f"Hub. A folder that bundles its encoder (`{config.encoder_kind}.safetensors`"
        + (", or `vae/`" if config.encoder_kind == "sd-vae" else "")
        + ") and `alexnet_lpips_features.safetensors` runs offline with no setting; otherwise the encoder comes from "
        f"`{config.encoder_source}` (kind `{config.encoder_kind}`) or from `FASTPROTECT_ENCODER_SOURCE`. Bundled "
        "weights keep their own licences (LICENSE.* files beside them: TAEF2/TAESD MIT, LPIPS BSD-2, torchvision "
        "AlexNet BSD-3).",
        "",
    ]
    if training:
        lines += _training_section(config, training)
    lines += _closing(evaluation, "Protection is measured on the encoder it was trained against. It is weakened by JPEG, "
                                  "resizing and noise; it is not a guarantee against every fine-tuning recipe.")
    return "\n".join(lines)


def replace_evaluation(text: str, evaluation: str) -> str:
    """A card's text with its evaluation section set to ``evaluation`` (markdown), added before
    the limits when the card has none yet."""
    block = f"{EVAL_BEGIN}\n{evaluation.strip(chr(10))}\n{EVAL_END}"
    if EVAL_BEGIN in text and EVAL_END in text:
        head, _, rest = text.partition(EVAL_BEGIN)
        _, _, tail = rest.partition(EVAL_END)
        return f"{head}{block}{tail}"
    section = f"{EVALUATION_HEADING}\n\n{block}\n\n"
    head, found, tail = text.partition(LIMITS_HEADING)
    return f"{head}{section}{found}{tail}" if found else f"{text.rstrip()}\n\n{section}"


# fill_form -> how the card says it (fastprotect.generator.FILL_FORMS)
_FORM_WORDS = {"blue-yellow": ", its δ then along JPEG's blue difference only (Cb; no change of brightness Y or of Cr)",
               "colour": ", its δ then in colour only (brightness part removed: δ − Y(δ))", "both": ""}


def _fill_words(config: GeneratorConfig) -> str:
    if config.fill_rms_levels <= 0 or config.fill_floor_max <= config.mask_floor:
        return ""
    return (f"; minimum energy: an image whose δ stays below an RMS of {config.fill_rms_levels:g} levels at η "
            f"{levels_from_eta(config.eta)} (scaled with η; large flat areas) gets its floor raised, for that image only "
            f"and at most to {config.fill_floor_max:g}, until it reaches it"
            + _FORM_WORDS[config.fill_form] + _block_words(config.fill_block))


def _block_words(block: int) -> str:
    if block <= 1:
        return ""
    grid = ", JPEG's block grid" if block == 8 else ""
    return (f", and constant over {block}×{block}-px squares counted from the top-left corner{grid} "
            f"(each image's energy kept; no detail inside a square)")


def _downscale_words(factor: int) -> str:
    if factor == 1:
        return ""
    return f", shrunk {factor}× more; its pattern is upsampled (bilinear) to full size, so δ has no detail finer than {factor} px"


def _eot_words(training: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """How the card names the training transformations (older runs did not record them: resize / blur / noise)."""
    if options.get("no_eot"):
        return "without random transformations"
    names = [n for n in training.get("transforms", ["identity", "resize", "blur", "noise"]) if n != "identity"]
    return f"through random {' / '.join(n if n != 'jpeg' else 'JPEG' for n in names)} (expectation over transformations)"


def _scale_words(options: dict) -> str:
    """Where the crops came from and what the loss saw (train.generator --frames / --input-diversity):
    what a reader needs to know at which pixel scale the network was trained."""
    words = ""
    if options.get("frames"):
        words += f" (whole frames at long side {options.get('load_size', '?')} px, crops at scale ≈ 1)"
    if options.get("input_diversity"):
        words += f"; input diversity on {options['input_diversity']:.0%} of steps"
    return words


def generator_card(config: GeneratorConfig, *, parameters: int, training: Mapping[str, Any] | None = None,
                   evaluation: str | None = None) -> str:
    """The README.md (YAML header + markdown) of a generator checkpoint (fastprotect.generator).

    ``training``: the generator trainer's record (``train_info.json``: ``step``, ``images``,
    ``wall_time_s``, ``hardware``, ``args``); ``evaluation``: a markdown table to include."""
    training = training or {}
    options = training.get("args") or {}
    eta_levels = levels_from_eta(config.eta)
    metadata = card_metadata()
    header = "\n".join(["---", f"library_name: {metadata['library_name']}", f"license: {metadata['license']}",
                        "tags:", *(f"- {tag}" for tag in metadata["tags"]), "---", "", ""])
    lines = [
        *_opening("perturbation generator",
                  "A small image-conditioned network that writes a protective perturbation in one forward pass, with no "
                  "per-image optimisation: δ(x) = cap(η · m(x) ⊙ G(x, m(x), y)). m is a *computed* texture budget (local "
                  "luminance contrast, full budget in texture, a small floor in flat areas), G a residual conv net that sees "
                  "the image, m and the target pattern y, and cap an energy cap on the RMS of δ. It replaces the paper's "
                  "mixture of fixed patterns as the default of this project (the mixture stays selectable).", config),
        f"| budget | L∞ {eta_levels}/255; RMS at most {config.rms_levels:g} levels (PSNR ≥ {psnr_floor_db(config):.1f} dB before rounding); both scale with η |",
        f"| texture budget | clamp(local contrast / {config.contrast_reference:g}, {config.mask_floor:g}, 1) ^ {config.mask_gamma:g}, "
        f"contrast = std of BT.601 luma in a {config.contrast_window}×{config.contrast_window} window{_fill_words(config)} |",
        f"| network | {parameters:,} parameters (width {config.width}, {config.blocks} residual blocks at 1/4 resolution), runs on a copy "
        f"with long side ≤ {config.work_size} px{_downscale_words(config.net_downscale)} |",
        f"| target | `{config.target}` pattern (pull of the encoder's latent and features towards it) |",
        f"| training | {training.get('step', 'not recorded')} steps, batch {options.get('batch', '?')}, {options.get('crop', '?')}² crops, "
        f"{training.get('images', '?')} images{_scale_words(options)} |",
        "| licence | MIT |",
        "",
        *USE_SECTION,
        "The folder bundles the TAEF2 autoencoder (for the Space's proofs and metrics, not needed to protect) and the "
        "LPIPS AlexNet backbone (metrics), with their licences (LICENSE.taef2: MIT; LICENSE.lpips: BSD-2 + BSD-3).",
        "",
        "## Training",
        "",
        f"- data: {training.get('images', '?')} images of `{', '.join(options.get('data', [])) or '?'}` (the project's training pool: "
        "objects, faces, paintings, cartoons; faces are research-only). No evaluation image was used.",
        "- loss: remaining latent and feature distance to the target pattern, relative to the clean image's "
        f"(λ = {options.get('feature_weight', '?')}), {_eot_words(training, options)}.",
        f"- optimisation: Adam, lr {options.get('lr', '?')}, seed {options.get('seed', '?')}; wall time "
        f"{training.get('wall_time_s', '?')} s on {training.get('hardware', 'unknown hardware')}.",
    ]
    if options.get("init"):
        lines.append(f"- initialised from `{options['init']}` (fine-tuning: the steps above come on top of that checkpoint's own).")
    trained_cap = options.get("rms_levels")
    if trained_cap is not None and float(trained_cap) != config.rms_levels:
        lines.append(f"- energy cap: trained with an RMS cap of {float(trained_cap):g} levels; this folder applies "
                     f"{config.rms_levels:g} (an inference-time operating point: the network is unchanged, the cap only scales δ down).")
    trained_fill = float(options.get("fill_rms_levels") or 0.0)  # runs from before the option trained without it
    if trained_fill != config.fill_rms_levels:
        trained_words = f"a minimum energy of {trained_fill:g} levels" if trained_fill else "no minimum energy"
        lines.append(f"- minimum energy: trained with {trained_words}; this folder applies "
                     + (f"{config.fill_rms_levels:g} levels" if config.fill_rms_levels else "none")
                     + " (an inference-time operating point: the network is unchanged, only the budget floor of a lifted image rises).")
    trained_downscale = options.get("net_downscale", 1)  # runs from before the option trained at full resolution
    if int(trained_downscale) != config.net_downscale:
        lines.append(f"- network copy: trained with the network on a copy shrunk {int(trained_downscale)}×; this folder shrinks it "
                     f"{config.net_downscale}× (an inference-time operating point: the same weights see a smaller copy and their "
                     "pattern is upsampled).")
    lines += [""]
    lines += _closing(evaluation, "Measured against the encoder it was trained against (a proxy of the FLUX.2 VAE) and on "
                                  "transformations it was trained with; transfer to other encoders is not measured. Purification "
                                  "(noisy upscaling, strong JPEG, diffusion cleaning) can remove it.")
    return header + "\n".join(lines)
