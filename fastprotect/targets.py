"""Target pattern images and the latent signatures that route an image to one of them.

The protection pulls an image's latent towards the latent of a *target pattern*: the same motif
repeated at three densities (``low`` / ``mid`` / ``high``). Which target suits an image is decided
by comparing *latent entropy signatures* (:func:`entropy_signature`): a busy, textured image is
sent to the dense pattern, a smooth one to the sparse pattern, so the pull needed is smallest.
"""

from __future__ import annotations

import math
import torch

from .vocabulary import TARGET_NAMES, TargetName
# Motif repetitions per side for each target: 2×2, 4×4 and 8×8 tiles on the square image.
REPETITIONS: dict[TargetName, int] = {"low": 2, "mid": 4, "high": 8}
HISTOGRAM_BINS = 16


def _motif(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The motif on tile coordinates ``u, v`` in [0, 1): 3×h×w in [0, 1].

    Concentric rings, a diagonal grating and a hard-edged square in three colours: high contrast
    at several scales and orientations, which gives every encoder channel something strong and
    unnatural to latch on to (the same idea as Mist's text pattern, drawn by our own code).
    """
    r = torch.sqrt((u - 0.5) ** 2 + (v - 0.5) ** 2)
    rings = 0.5 + 0.5 * torch.cos(2 * math.pi * 5 * r)
    grating = 0.5 + 0.5 * torch.sin(2 * math.pi * 3 * (u + v))
    square = ((u - 0.5).abs().maximum((v - 0.5).abs()) < 0.18).float()
    red = 0.75 * rings + 0.25 * square
    green = 0.6 * grating + 0.4 * (1 - square)
    blue = 0.5 * (1 - rings) + 0.5 * grating * square
    return torch.stack([red, green, blue]).clamp(0, 1)


def target_pattern(name: TargetName, size: int) -> torch.Tensor:
    """The target image ``name`` at ``size``×``size``: 1×3×S×S float32 in [0, 1], deterministic."""
    return target_window(name, size, size)


def target_window(name: TargetName, height: int, width: int, *, full: tuple[int, int] | None = None,
                  offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """The pattern ``name`` drawn over an image of ``full`` = (H, W) pixels (default: height × width,
    the tiles stretched with the image as a resize of the square pattern would), cut to the
    ``height`` × ``width`` window whose top-left pixel is ``offset``: 1×3×h×w float32 in [0, 1].

    Used by the generator, which sees the target beside the image: at inference the whole image,
    in training a crop of a larger virtual image (so it learns the pattern at every scale).
    """
    if name not in REPETITIONS:
        raise ValueError(f"unknown target {name!r}; expected one of {TARGET_NAMES}")
    full_h, full_w = full or (height, width)
    rows = (torch.arange(height, dtype=torch.float64) + offset[0] + 0.5) / full_h * REPETITIONS[name]
    cols = (torch.arange(width, dtype=torch.float64) + offset[1] + 0.5) / full_w * REPETITIONS[name]
    v, u = torch.meshgrid(rows % 1.0, cols % 1.0, indexing="ij")
    return _motif(u, v).float().unsqueeze(0)


def target_patterns(size: int) -> torch.Tensor:
    """All three targets in ``TARGET_NAMES`` order: T×3×S×S in [0, 1]."""
    return torch.cat([target_pattern(name, size) for name in TARGET_NAMES])


def entropy_signature(latent: torch.Tensor) -> torch.Tensor:
    """Latent entropy signature H(z): B×C×h×w latent -> B×2C, every entry in [0, 1].

    Two normalised Shannon entropies per latent channel:
    * value entropy: the channel standardised by its own mean/std, binned into
      ``HISTOGRAM_BINS`` bins on [-3, 3]; low for flat or two-tone content, high for varied content;
    * spectral entropy: the channel's spatial power spectrum (DC removed) read as a probability
      distribution; low when energy sits in a few frequencies (smooth or periodic), high for
      broadband texture.
    Both are divided by their maximum (log of the bin/frequency count), so the signature does not
    depend on the encoder's latent scale or the image size, and an L1 distance between signatures
    compares images with targets fairly.
    """
    b, c = latent.shape[:2]
    z = latent.detach().float().flatten(2)  # B×C×N
    standard = (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + 1e-6)
    bins = ((standard.clamp(-3, 3 - 1e-6) + 3) / 6 * HISTOGRAM_BINS).long()
    counts = torch.zeros(b, c, HISTOGRAM_BINS, device=z.device).scatter_add_(-1, bins, torch.ones_like(standard))
    value_entropy = _entropy(counts) / math.log(HISTOGRAM_BINS)

    centred = latent.detach().float() - latent.detach().float().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.rfft2(centred).abs().pow(2).flatten(2)  # B×C×F
    spectral_entropy = _entropy(power) / math.log(max(power.shape[-1] - 1, 2))
    return torch.cat([value_entropy, spectral_entropy.clamp(0, 1)], dim=1)


def _entropy(weights: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of non-negative ``weights`` along the last dimension."""
    p = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    return -(p * p.clamp_min(1e-12).log()).sum(-1)
