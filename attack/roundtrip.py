"""VAE round trip: what a fine-tuner's model actually sees of an image.

Every latent diffusion fine-tune (LoRA, DreamBooth, textual inversion) and every img2img edit
starts by encoding the image with the VAE; the decoder's view of that latent is the image "as
the model sees it". A protection that pulls the latent to a target pattern makes this view
show the pattern instead of the picture. One encode + decode is cheap (seconds on a CPU at 512²
with a tiny autoencoder, no training), so this is the instant check of the Space.

It shows the *input side* of mimicry only: a round trip is not a fine-tune, and a pattern in
the round trip is evidence, not proof, that a LoRA trained on the image learns the pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from diffusers import AutoencoderKL

from fastprotect.encoders import Autoencoder, AutoencoderKind, SDVAEDecoder, SDVAEEncoder, load_autoencoder

from .pipeline import DeviceSpec, module_device, resize, resolve_device, working_size

PerceptualDistance = torch.nn.Module  # forward(x, y) -> B distances, images in [0, 1]


class RoundTripper(Protocol):
    """Anything with ``round_trip(images) -> images`` (B×3×H×W in [0, 1]), e.g.
    :class:`fastprotect.encoders.Autoencoder`."""

    def round_trip(self, images: torch.Tensor) -> torch.Tensor: ...


def load_round_tripper(
    kind: AutoencoderKind,
    source: str | Path | None = None,
    *,
    subfolder: str | None = None,
    device: DeviceSpec = "auto",
    dtype: torch.dtype = torch.float32,
) -> Autoencoder:
    """The autoencoder with its decoder, through the library's loader (Hub id or local path).

    ``"sd-vae"``: SD-1.5's AutoencoderKL (default: the ``vae`` folder of SD-1.5 on the Hub), the
    one a LoRA on SD-1.5 trains through; ``"taesd"`` / ``"taef2"``: the tiny autoencoders (a folder
    holding ``{kind}_encoder.pth`` and ``{kind}_decoder.pth``). ``source=None``: the library's
    default (``fastprotect.encoders.default_source``).
    """
    return load_autoencoder(kind, source, subfolder=subfolder, with_decoder=True, device=resolve_device(device), dtype=dtype)


def pipeline_autoencoder(vae: AutoencoderKL) -> Autoencoder:
    """The library's autoencoder view of a pipeline's VAE (shared modules, frozen): the exact
    encoder a LoRA on that pipeline trains through."""
    return Autoencoder(encoder=SDVAEEncoder.from_vae(vae), decoder=SDVAEDecoder.from_vae(vae), kind="sd-vae", source="pipeline")


@torch.no_grad()
def round_trip(model: RoundTripper | AutoencoderKL, images: torch.Tensor, *, max_side: int | None = None) -> torch.Tensor:
    """Encode and decode B×3×H×W [0, 1] images; returns the same shape on the input's device.

    Runs at sides rounded to a multiple of 8 (and the long side capped at ``max_side``, for
    memory), then resizes back, so any input size works. ``model`` is a library autoencoder or a
    diffusers ``AutoencoderKL`` (e.g. ``pipe.vae`` of the pipeline a LoRA would train on).
    """
    if isinstance(model, AutoencoderKL):
        model = pipeline_autoencoder(model)
    height, width = images.shape[-2:]
    run_height, run_width = working_size(height, width, multiple=8, max_side=max_side)
    inputs = resize(images, run_height, run_width)
    decoded = model.round_trip(inputs.to(module_device(model, inputs.device))).float().clamp(0, 1)
    return resize(decoded.to(images.device), height, width)


@dataclass
class RoundTripReport:
    """The mimic's view of a clean image and of its protected copy, with LPIPS to the original.

    ``damage`` = lpips_protected_round_trip − lpips_clean_round_trip (as
    :func:`fastprotect.metrics.mimic_damage`): how much farther from the original the model's
    view of the protected image lands than its view of the clean image. Larger = stronger.
    """

    clean_round_trip: torch.Tensor  # 1×3×H×W, [0, 1]
    protected_round_trip: torch.Tensor
    lpips_protected: float  # original vs protected: the visible cost of the protection
    lpips_clean_round_trip: float  # original vs its own round trip: the autoencoder's own loss
    lpips_protected_round_trip: float  # original vs the protected image's round trip

    @property
    def damage(self) -> float:
        return self.lpips_protected_round_trip - self.lpips_clean_round_trip

    def as_dict(self) -> dict[str, float]:
        return {
            "lpips_protected": self.lpips_protected,
            "lpips_clean_round_trip": self.lpips_clean_round_trip,
            "lpips_protected_round_trip": self.lpips_protected_round_trip,
            "damage": self.damage,
        }


@torch.no_grad()
def roundtrip_report(
    model: RoundTripper | AutoencoderKL,
    original: torch.Tensor,
    protected: torch.Tensor,
    perceptual: PerceptualDistance,
    *,
    max_side: int | None = 768,
) -> RoundTripReport:
    """Round-trip ``original`` and ``protected`` (1×3×H×W, [0, 1], same size) and measure both
    against the original with ``perceptual`` (e.g. ``fastprotect.perceptual.load_perceptual()``)."""
    if original.shape != protected.shape:
        raise ValueError(f"original {tuple(original.shape)} and protected {tuple(protected.shape)} differ in shape")
    clean_rt = round_trip(model, original, max_side=max_side)
    protected_rt = round_trip(model, protected, max_side=max_side)

    device = module_device(perceptual, original.device)

    def distance(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(perceptual(a.to(device), b.to(device)).mean())

    return RoundTripReport(
        clean_round_trip=clean_rt,
        protected_round_trip=protected_rt,
        lpips_protected=distance(original, protected),
        lpips_clean_round_trip=distance(original, clean_rt),
        lpips_protected_round_trip=distance(original, protected_rt),
    )
