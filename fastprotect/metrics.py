"""Invisibility and efficacy measures. Every image argument is B×3×H×W in [0, 1].

Invisibility (protected vs clean): :func:`psnr`, :func:`ssim`, :func:`linf_levels`, LPIPS via
:class:`fastprotect.perceptual.PerceptualDistance`. Efficacy against an encoder E with target y:
:func:`latent_distance`, :func:`latent_pull` (‖E(x̂) − E(y)‖ / ‖E(x) − E(y)‖, lower is stronger)
and :func:`mimic_damage` (LPIPS(D(E(x̂)), x) − LPIPS(D(E(x)), x), higher is stronger).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB (data range 1); inf for identical images."""
    mse = (a.float() - b.float()).pow(2).mean()
    if mse == 0:
        return float("inf")
    return float(peak_signal_noise_ratio(a.float(), b.float(), data_range=1.0))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean structural similarity (Gaussian window 11, σ 1.5, data range 1)."""
    return float(structural_similarity_index_measure(a.float(), b.float(), data_range=1.0))


def linf_levels(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest per-channel difference in 8-bit levels (0–255 units)."""
    return int(((a.float() - b.float()).abs().max() * 255).round())


def latent_distance(latent: torch.Tensor, target_latent: torch.Tensor) -> torch.Tensor:
    """‖z − z_target‖₂ per sample: B."""
    return (latent.float() - target_latent.float()).flatten(1).norm(dim=1)


def latent_pull(clean_latent: torch.Tensor, protected_latent: torch.Tensor, target_latent: torch.Tensor) -> torch.Tensor:
    """‖E(x̂) − E(y)‖ / ‖E(x) − E(y)‖ per sample: 1 = no pull, 0 = reached the target."""
    return latent_distance(protected_latent, target_latent) / latent_distance(clean_latent, target_latent).clamp_min(1e-12)


def mimic_damage(perceptual: torch.nn.Module, clean: torch.Tensor, clean_round_trip: torch.Tensor, protected_round_trip: torch.Tensor) -> torch.Tensor:
    """LPIPS(D(E(x̂)), x) − LPIPS(D(E(x)), x) per sample: how much farther from the original the
    fine-tuner's view of the protected image is than its view of the clean one."""
    return perceptual(protected_round_trip, clean) - perceptual(clean_round_trip, clean)
