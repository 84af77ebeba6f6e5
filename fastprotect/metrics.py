"""Invisibility and efficacy measures. Every image argument is B×3×H×W in [0, 1].

Invisibility (protected vs clean): :func:`psnr`, :func:`ssim`, :func:`linf_levels`, LPIPS via
:class:`fastprotect.perceptual.PerceptualDistance`. Efficacy against an encoder E with target y:
:func:`latent_distance`, :func:`latent_pull` (‖E(x̂) − E(y)‖ / ‖E(x) − E(y)‖, lower is stronger)
and :func:`mimic_damage` (LPIPS(D(E(x̂)), x) − LPIPS(D(E(x)), x), higher is stronger).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# SSIM as Wang et al. (2004) define it and torchmetrics computes it (tests/test_imports.py checks the
# two agree): an 11×11 Gaussian window of σ 1.5, K1 0.01, K2 0.03, on the image reflect-padded by
# half a window, the map averaged over every pixel. Written here because importing torchmetrics
# also imports torchvision and transformers (seconds), and every protect() reports an SSIM.
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB (data range 1) over the whole batch; inf for identical images."""
    mse = float((a.float() - b.float()).pow(2).mean())
    return float("inf") if mse == 0 else -10 * math.log10(mse)


def _gaussian_window(channels: int, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=device) - (SSIM_WINDOW - 1) / 2
    line = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    line = line / line.sum()
    return torch.outer(line, line).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean structural similarity (Gaussian window 11, σ 1.5, data range 1). Sides of 6 px or more."""
    pad = SSIM_WINDOW // 2
    a = F.pad(a.float(), (pad, pad, pad, pad), mode="reflect")
    b = F.pad(b.float(), (pad, pad, pad, pad), mode="reflect")
    window = _gaussian_window(a.shape[1], a.device)
    stats = F.conv2d(torch.cat((a, b, a * a, b * b, a * b)), window, groups=a.shape[1]).split(a.shape[0])
    mu_a, mu_b = stats[0], stats[1]
    var_a = (stats[2] - mu_a**2).clamp_min(0)
    var_b = (stats[3] - mu_b**2).clamp_min(0)
    covariance = stats[4] - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    index = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


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


# ITU-R BT.601 luma weights (R, G, B), applied to the [0, 1] values as stored (no linearisation).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
CONTRAST_WINDOW = 7


def luma(images: torch.Tensor) -> torch.Tensor:
    """BT.601 luma B×1×H×W of B×3×H×W values (images or a change to them), in their dtype."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def local_contrast(images: torch.Tensor, window: int = CONTRAST_WINDOW) -> torch.Tensor:
    """Local contrast B×H×W: the standard deviation (population, 1/n) of the BT.601 luminance
    Y = 0.299 R + 0.587 G + 0.114 B in the ``window``×``window`` square centred on each pixel, the
    image reflect-padded by ``window // 2`` at its borders (sides of at least ``window // 2 + 1`` px)."""
    pad = window // 2
    padded = F.pad(luma(images.float()), (pad, pad, pad, pad), mode="reflect")
    mean = F.avg_pool2d(padded, window, stride=1)
    mean_sq = F.avg_pool2d(padded * padded, window, stride=1)
    return (mean_sq - mean * mean).clamp_min(0).sqrt()[:, 0]
