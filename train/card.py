"""The model card (README.md) written next to the final checkpoint."""

from __future__ import annotations

from pathlib import Path

from fastprotect.mixture import MixtureConfig

EVAL_BEGIN = "<!-- evaluation:begin -->"
EVAL_END = "<!-- evaluation:end -->"

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


# How the card names each K-means descriptor (fastprotect.mixture.DESCRIPTORS).
DESCRIPTOR_WORDS = {"channel-mean-std": "per-channel mean/std", "layout-4x4": "per-channel 4×4 grid means (layout)"}


def _group_table(groups: list[dict[str, int]]) -> str:
    return "; ".join(f"group {k}: " + ", ".join(f"{d} {n}" for d, n in sorted(g.items())) for k, g in enumerate(groups))


def write_card(folder: Path, config: MixtureConfig, info: dict, evaluation: str | None = None) -> Path:
    args = info.get("args", {})
    lines = [
        "---",
        "library_name: fastprotect",
        "tags: [image-protection, adversarial-perturbation, fastprotect]",
        "license: mit",
        "---",
        "",
        f"# FastProtect mixture of perturbations ({config.encoder_kind})",
        "",
        "A re-implementation of the pre-trained *mixture of perturbations* of FastProtect (Ahn et al., CVPR 2025, "
        "arXiv 2412.11423; no official code). At inference an image is encoded once, routed to one of "
        f"{config.num_groups} K-means groups and one of 3 target patterns by its latent entropy, and gets "
        "δ_g^t + Δ_k^t resized to its size, scaled by adaptive strength and projected to the user's L∞ budget.",
        "",
        PROXY_NOTE.get(config.encoder_kind, ""),
        "",
        "## Use",
        "",
        "```python",
        "from fastprotect.protect import Protector",
        "protector = Protector.from_pretrained(\"PATH_OR_REPO\")",
        "result = protector.protect(\"photo.jpg\")",
        "```",
        "",
        f"`config.json` names the encoder `{config.encoder_source}` (kind `{config.encoder_kind}`). On a machine "
        "without Hub access, point at local weights with `FASTPROTECT_ENCODER_SOURCE=/path/to/weights`"
        + (" (the folder holding `taef2_encoder.pth`; TAEF2 has no official Hub repo, the id above is a placeholder)." if config.encoder_kind == "taef2" else "."),
        "",
        "## Training",
        "",
        f"- perturbations: 3 targets × (1 global + {config.num_groups} group), each 3×{config.size}×{config.size}, "
        f"each within ±η/2 with η = {round(config.eta * 255)}/255; stored as {info.get('dtype', 'fp16')}.",
        f"- assignment: K-means++ (K = {config.num_groups}) on the {DESCRIPTOR_WORDS[config.descriptor]} of the latent of a "
        f"{config.assign_size}² copy (standardised); target choice: L1 distance of latent entropy signatures.",
        *([f"- training images per group, by domain: {_group_table(info['group_domains'])}"] if info.get("group_domains") else []),
        f"- loss: relative squared error of the latent + λ·mean over encoder feature maps of the same, λ = {config.feature_weight}.",
        f"- data: {info.get('train_images')} training images from domains {', '.join(info.get('domains', []))}; "
        f"{info.get('heldout_images')} held out (split by {info.get('grouping')}). Face images (CelebA-HQ / VGGFace2, "
        "research-only) were used for training and evaluation only; no image of any kind is shipped with this checkpoint.",
        f"- optimisation: Adam, {info.get('steps')} steps of batch {info.get('batch_size')}, lr {args.get('lr') or 'η/10'} "
        f"({args.get('lr_schedule', 'cosine')}), seed {args.get('seed')}; ablation flags: "
        f"no_assignment={bool(args.get('no_assignment'))}, fixed_target={args.get('fixed_target')}.",
        f"- wall time: {info.get('wall_time_s')} s on {info.get('hardware')}.",
        *([f"- note: {info['note']}"] if info.get("note") else []),
        "",
        "## Evaluation",
        "",
        EVAL_BEGIN,
        evaluation or "Not evaluated yet: run `python -m train.evaluate` (docs/EVALUATION.md).",
        EVAL_END,
        "",
        "## Limits",
        "",
        "Protection is measured on the encoder it was trained against. It is weakened by JPEG, resizing and noise "
        "(see the robustness table); it is not a guarantee against every fine-tuning recipe.",
        "",
    ]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines))
    return path


def replace_evaluation(card: Path, evaluation: str) -> None:
    """Swap the evaluation section of an existing card for ``evaluation`` (markdown)."""
    text = card.read_text()
    head, _, rest = text.partition(EVAL_BEGIN)
    _, _, tail = rest.partition(EVAL_END)
    card.write_text(f"{head}{EVAL_BEGIN}\n{evaluation}\n{EVAL_END}{tail}")
