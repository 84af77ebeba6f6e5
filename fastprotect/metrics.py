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
    """Largest per-channel difference in 8-bit levels (0–255 units). Row band by row band: no full-size temporary."""
    largest = max(float((a[..., i : i + 256, :].float() - b[..., i : i + 256, :].float()).abs().max()) for i in range(0, a.shape[-2], 256))
    return int(round(largest * 255))


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


# local_contrast works through the image in bands of this many rows: its temporaries are a few bands, not a few
# full-size maps (a 4096×3072 map is 50 MB), and each band's sums stay in cache.
CONTRAST_BAND_ROWS = 256


def local_contrast(images: torch.Tensor, window: int = CONTRAST_WINDOW) -> torch.Tensor:
    """Local contrast B×H×W: the standard deviation (population, 1/n) of the BT.601 luminance
    Y = 0.299 R + 0.587 G + 0.114 B in the ``window``×``window`` square centred on each pixel, the
    image reflect-padded by ``window // 2`` at its borders (sides of at least ``window // 2 + 1`` px).

    Computed as √(E[Y²] − E[Y]²) with box sums made of shifted additions (:func:`_window_sum`), band by band
    (``CONTRAST_BAND_ROWS``): PyTorch's avg_pool2d took 1.2 s per 7×7 pass over a 12 MP map on two cores, the
    shifted sums a fifth of that. The float32 sums add in another order than a pooling's: the same values to
    about 1e-6 (tests/test_generator.py compares the two)."""
    if images.requires_grad:  # the banded sums write in place; a differentiable caller gets the pooling form
        return _pooled_local_contrast(images, window)
    pad = window // 2
    batch, _, height, width = images.shape
    out = torch.empty(batch, height, width, dtype=torch.float32, device=images.device)
    rows = torch.arange(-pad, height + pad, device=images.device).abs()  # reflect: −1 → 1, H → H − 2
    rows = torch.where(rows > height - 1, 2 * (height - 1) - rows, rows)
    for start in range(0, height, CONTRAST_BAND_ROWS):
        stop = min(height, start + CONTRAST_BAND_ROWS)
        if start >= pad and stop + pad <= height:  # inside the image: a view, no copy
            band = images[:, :, start - pad : stop + pad]
        else:  # at the top or bottom edge: the reflected rows gathered
            band = images.index_select(2, rows[start : stop + 2 * pad])
        band = band.float()
        both = torch.empty(batch, 2, stop - start + 2 * pad, width + 2 * pad, dtype=torch.float32, device=images.device)
        y = both[:, :1]
        y[..., pad : pad + width] = band[:, :1] * LUMA_WEIGHTS[0] + band[:, 1:2] * LUMA_WEIGHTS[1] + band[:, 2:3] * LUMA_WEIGHTS[2]
        y[..., :pad] = y[..., pad + 1 : 2 * pad + 1].flip(-1)  # reflect the columns (the edge pixel itself not repeated)
        y[..., pad + width :] = y[..., width - 1 : pad + width - 1].flip(-1)
        torch.mul(y, y, out=both[:, 1:])
        sums = _window_sum(_window_sum(both, window, -1), window, -2).div_(window * window)
        variance = torch.addcmul(sums[:, 1], sums[:, 0], sums[:, 0], value=-1, out=out[:, start:stop])  # E[Y²] − E[Y]²
        variance.clamp_min_(0).sqrt_()
    return out


def _pooled_local_contrast(images: torch.Tensor, window: int) -> torch.Tensor:
    """:func:`local_contrast` by average pooling over the reflect-padded luma: differentiable, and the reference the
    banded sums are tested against."""
    pad = window // 2
    padded = F.pad(luma(images.float()), (pad, pad, pad, pad), mode="reflect")
    mean = F.avg_pool2d(padded, window, stride=1)
    mean_sq = F.avg_pool2d(padded * padded, window, stride=1)
    return (mean_sq - mean * mean).clamp_min(0).sqrt()[:, 0]


def _window_sum(values: torch.Tensor, window: int, dim: int) -> torch.Tensor:
    """Sums of ``window`` consecutive entries along ``dim`` (the size shrinks by window − 1), from sums of 1, 2, 4, …
    entries: about log2(window) + popcount(window) additions instead of window − 1 (4 for 7)."""
    count = values.shape[dim] - window + 1
    total, offset, length, span, remaining = None, 0, 1, values, window
    while True:
        if remaining & 1:  # this power of two is part of the window: add the span starting where the last one ended
            part = span.narrow(dim, offset, count)
            total = part.clone() if total is None else total.add_(part)
            offset += length
        remaining >>= 1
        if not remaining:
            return total
        size = span.shape[dim] - length
        span = span.narrow(dim, 0, size) + span.narrow(dim, length, size)
        length *= 2
