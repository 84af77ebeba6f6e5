"""The Space's proof tabs, as functions: what a mimic sees (VAE round trip, img2img) and the
LoRA duel on clean vs protected copies. ``app.py`` wires these to the UI (through
:mod:`webapp.handlers`); the attacks themselves live in :mod:`attack`. Images cross as ``LoadedImage`` / PIL images. ``pipe``: an
:class:`attack.mimic.Mimic` (any family, from ``attack.mimic.load_mimic``) or a bare SD-1.5 pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fastprotect.images import ImageError, LoadedImage, fit_within, load_image, resize_tensor
from .space import ProgressCallback, SpaceInputError, _json_safe, tensor_to_pil

@dataclass
class MimicViews:
    clean: Image.Image  # RGB: the clean image's VAE round trip
    protected: Image.Image  # RGB: the protected image's VAE round trip
    numbers: dict[str, float]
    markdown: str


def mimic_round_trip(protector: Any, clean: LoadedImage, protected: LoadedImage, *, max_side: int = 768, autoencoder: Any = None,
                     device: Any = None, measure: bool = True) -> MimicViews:
    """Round-trip a clean image and its protected copy through ``autoencoder`` (default: the
    protector's own; the Space passes the mimic's VAE, ``attack.mimic.family_autoencoder``, when a
    mimic is loaded); with LPIPS loaded and ``measure``, also measure how far each view lands from the clean
    original (``measure=False``: pictures only, when the result's own verdict already measured this network)."""
    autoencoder = autoencoder if autoencoder is not None else protector.autoencoder
    if not measure and autoencoder is protector.autoencoder:  # pictures only, with the library's own autoencoder
        return _own_round_trip(autoencoder, clean, protected, max_side=max_side, device=device if device is not None else protector.device)
    from attack.roundtrip import round_trip, roundtrip_report  # diffusers: a one-off 5–20 s import, only when needed

    if (clean.width, clean.height) != (protected.width, protected.height):
        raise SpaceInputError("the clean and protected images differ in size")
    device = device if device is not None else protector.device
    x, p = clean.pixels.to(device), protected.pixels.to(device)
    numbers: dict[str, float] = {}
    with torch.no_grad():
        if measure and protector.perceptual is not None:
            report = roundtrip_report(autoencoder, x, p, protector.perceptual, max_side=max_side)
            clean_rt, protected_rt, numbers = report.clean_round_trip, report.protected_round_trip, report.as_dict()
        else:
            clean_rt = round_trip(autoencoder, x, max_side=max_side)
            protected_rt = round_trip(autoencoder, p, max_side=max_side)
    lines = ["| LPIPS to the clean original | value |", "|---|---|"]
    labels = {
        "lpips_protected": "protected image (the visible cost)",
        "lpips_clean_round_trip": "model's view of the clean image",
        "lpips_protected_round_trip": "model's view of the protected image",
        "damage": "damage (protected view − clean view; higher = stronger)",
    }
    lines += [f"| {labels[key]} | {value:.4f} |" for key, value in numbers.items()]
    markdown = "\n".join(lines) if numbers else "LPIPS is not loaded on this server: pictures only."
    return MimicViews(tensor_to_pil(clean_rt), tensor_to_pil(protected_rt), numbers, markdown)


def _own_round_trip(autoencoder: Any, clean: LoadedImage, protected: LoadedImage, *, max_side: int, device: Any) -> MimicViews:
    """decode(encode(x)) of both images with a library autoencoder, at sides that are multiples of 8 with the long
    side at most ``max_side`` (as ``attack.roundtrip.round_trip`` does), shown at that size; no diffusers import."""
    height, width = fit_within(clean.height, clean.width, max_side, min_side=8, multiple=8)
    with torch.no_grad():
        pair = torch.cat([resize_tensor(clean.pixels, height, width), resize_tensor(protected.pixels, height, width)]).to(device)
        seen = autoencoder.round_trip(pair).float().clamp(0, 1).cpu()
    return MimicViews(tensor_to_pil(seen[:1]), tensor_to_pil(seen[1:]), {}, "")


def mimic_img2img(pipe: Any, clean: LoadedImage, protected: LoadedImage, prompt: str, strength: float, *, steps: int | None = None) -> tuple[Image.Image, Image.Image]:
    """The family's img2img of both copies with the same prompt and seed (SD-1.5: SDEdit; FLUX.2
    klein: reference edit, where ``strength`` is unused); ``steps=None``: the family's. Needs a GPU in practice."""
    from attack.mimic import as_mimic, edit_settings, family_img2img

    if not 0 < strength <= 1:
        raise SpaceInputError(f"img2img strength must be in (0, 1], got {strength}")
    mimic = as_mimic(pipe)
    options = {"prompt": prompt.strip()} if prompt.strip() else {}
    if steps is not None:
        options["steps"] = steps
    settings = edit_settings(mimic.family, strength=strength, max_side=512, **options)
    clean_out, protected_out = family_img2img(mimic, [clean.pixels, protected.pixels], settings)
    return tensor_to_pil(clean_out), tensor_to_pil(protected_out)


def lora_duel_from_uploads(
    pipe: Any, uploads: Sequence[tuple[str, str]], protector: Any, output_dir: str | Path, steps: int,
    progress: ProgressCallback | None = None, *, limits: tuple[int, int] = (4, 8), max_pixels: int | None = None, **duel: Any,
) -> tuple[Image.Image, dict[str, Any]]:
    """Protect ``uploads`` (default options) and run the LoRA duel on clean vs protected copies."""
    _check_duel_count(len(uploads), limits)
    clean, protected = [], []
    for index, (path, display) in enumerate(uploads):
        if progress is not None:
            progress(0.02 + 0.08 * index / len(uploads), f"protecting {display}")
        try:
            loaded = load_image(path, max_pixels=max_pixels, name=display)
        except ImageError as error:
            raise ImageError(f"{display}: {error}") from None
        clean.append(loaded.pixels)
        protected.append(protector.protect(loaded, compute_metrics=False).image.cpu())
    return _run_duel(pipe, clean, protected, protector, output_dir, steps, progress, **duel)


def lora_duel_from_pairs(
    pipe: Any, pairs: Sequence[tuple[str, str]], protector: Any, output_dir: str | Path, steps: int,
    progress: ProgressCallback | None = None, *, limits: tuple[int, int] = (4, 8), **duel: Any,
) -> tuple[Image.Image, dict[str, Any]]:
    """The duel on an already protected batch: (clean path, protected PNG path) pairs."""
    if not pairs:
        raise SpaceInputError("no protected batch yet: protect 4–8 images in the Batch tab first, or upload images here")
    _check_duel_count(len(pairs), limits)
    clean = [load_image(path).pixels for path, _ in pairs]
    protected = [load_image(path).pixels for _, path in pairs]
    return _run_duel(pipe, clean, protected, protector, output_dir, steps, progress, **duel)


def _check_duel_count(count: int, limits: tuple[int, int]) -> None:
    if not limits[0] <= count <= limits[1]:
        raise SpaceInputError(f"{count} images given; the duel needs {limits[0]} to {limits[1]}")


def _run_duel(pipe, clean, protected, protector, output_dir, steps, progress, *, resolution: int = 512, sample_steps: int | None = None) -> tuple[Image.Image, dict[str, Any]]:
    """``attack.mimic.family_lora_duel`` with the family's defaults at 512²; tests pass a tiny resolution."""
    from attack.compare import duel_grid, duel_scores
    from attack.mimic import as_mimic, family_lora_duel, lora_settings, sample_settings

    mimic = as_mimic(pipe)
    settings = lora_settings(mimic.family, steps=int(steps), resolution=resolution)
    sampling = sample_settings(mimic.family, resolution=resolution, **({"steps": sample_steps} if sample_steps else {}))
    device = mimic.device

    def report(name: str, step: int, total: int, loss: float) -> None:
        if progress is not None:
            base = 0.1 if name == "clean" else 0.5
            progress(base + 0.4 * step / total, f"training the {name} LoRA: step {step}/{total} (loss {loss:.3f})")

    clean_dev = [image.to(device) for image in clean]
    protected_dev = [image.to(device) for image in protected]
    result = family_lora_duel(mimic, clean_dev, protected_dev, output_dir, settings, sampling, progress=report)
    if progress is not None:
        progress(0.95, "scoring")
    grid = duel_grid(clean, protected, result.clean_samples, result.protected_samples)
    scores: dict[str, Any] = {"seconds": {"clean": round(result.clean.seconds, 1), "protected": round(result.protected.seconds, 1)}}
    if protector.perceptual is not None:
        targets = {name: protector.target_images[i : i + 1].cpu() for i, name in enumerate(("low", "mid", "high"))}
        perceptual = protector.perceptual
        scores.update(duel_scores(clean, result.clean_samples, result.protected_samples, perceptual, targets))
    return grid, _json_safe(scores)
