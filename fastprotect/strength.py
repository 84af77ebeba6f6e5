"""Adaptive strength, L∞ projection and 8-bit quantisation that keeps the budget.

The final image is ``x + S(1 − M)·δ``: M is the spatial LPIPS map of ``(x, x + δ)`` (how visible
the perturbation is, pixel by pixel) and S turns it into a per-pixel scale. We use the decile-step
form reported for the paper's appendix (α = 1.3, β = 0.91, c = 3): pixels are ranked by M within
the image; the c least visible deciles are boosted by α, the c most visible are damped by β, β², β³
(the most visible decile most), the rest keep scale 1. Ranking makes S independent of LPIPS's
absolute scale, which differs between backbones and image sizes.
"""

from __future__ import annotations

import torch

from .vocabulary import levels_from_eta

ALPHA = 1.3
BETA = 0.91
STEPS = 3
_MAX_QUANTILE_SAMPLES = 1 << 20  # torch.quantile refuses very large inputs; deciles of 1M samples are exact enough


def adaptive_scale(visibility: torch.Tensor, *, alpha: float = ALPHA, beta: float = BETA, steps: int = STEPS) -> torch.Tensor:
    """Per-pixel scale S from a visibility map M (B×1×H×W, any non-negative scale) -> B×1×H×W.

    decile 0 = least visible, 9 = most visible; deciles < steps get ``alpha``; decile ``9 − j``
    (j < steps) gets ``beta ** (steps − j)``: deciles 7, 8, 9 get β, β², β³ for steps = 3.
    """
    if not 0 <= steps <= 5:
        raise ValueError("steps must be between 0 and 5 (deciles on each side)")
    b = visibility.shape[0]
    flat = visibility.detach().float().reshape(b, -1)
    sample = flat
    if flat.shape[1] > _MAX_QUANTILE_SAMPLES:
        stride = flat.shape[1] // _MAX_QUANTILE_SAMPLES + 1
        sample = flat[:, ::stride]
    levels = torch.linspace(0.1, 0.9, 9, device=flat.device)
    edges = torch.quantile(sample, levels, dim=1).T.contiguous()  # B×9 decile edges
    decile = torch.searchsorted(edges, flat.contiguous(), right=True)  # B×N in 0..9
    table = torch.ones(10, device=flat.device)
    for j in range(steps):
        table[j] = alpha
        table[9 - j] = beta ** (steps - j)
    return table[decile].reshape(visibility.shape)


def project_linf(delta: torch.Tensor, eta: float) -> torch.Tensor:
    """Clip a perturbation to the L∞ ball of radius ``eta`` (image units, [0, 1] scale)."""
    return delta.clamp(-eta, eta)


def quantise_within_budget(original: torch.Tensor, protected: torch.Tensor, eta: float) -> torch.Tensor:
    """Round ``protected`` to the 8-bit grid so that, *after* rounding, |result − original| ≤ eta.

    ``original`` must lie on the 8-bit grid (k/255, as images.load_image returns). Rounding alone
    can overshoot the budget by half a level, so the rounded levels are clamped to
    ``original ± levels_from_eta(eta)`` and to [0, 255]. Returns float in [0, 1] on the 8-bit grid.
    """
    base = (original * 255).round()
    levels = levels_from_eta(eta)
    quantised = (protected * 255).round().clamp(base - levels, base + levels).clamp(0, 255)
    return quantised / 255


# compose_ works in bands of this many rows: its temporaries are a band, not a full-size copy (151 MB at 4096×3072).
COMPOSE_BAND_ROWS = 256


def compose_(original: torch.Tensor, delta: torch.Tensor, eta: float) -> torch.Tensor:
    """The protected image ``quantise_within_budget(original, (original + delta).clamp(0, 1), eta)``, written over
    ``delta`` (which must already lie within ±η, and which the caller gives up) band by band, and returned.

    The same operations in the same order as the plain expression, so the same values; the final clamp to [0, 255] is
    left out because it cannot act (the rounded levels are in [0, 255] before they are held to base ± levels)."""
    for start in range(0, delta.shape[-2], COMPOSE_BAND_ROWS):
        band, clean = delta[..., start : start + COMPOSE_BAND_ROWS, :], original[..., start : start + COMPOSE_BAND_ROWS, :]
        compose_levels_(clean, band, eta).div_(255)
    return delta


def compose_levels_(original: torch.Tensor, delta: torch.Tensor, eta: float) -> torch.Tensor:
    """:func:`compose_` before its last step: the protected image's 8-bit levels (whole numbers 0–255, as floats),
    written over ``delta`` in one pass (the caller bands it). ``original`` in [0, 1] on the 8-bit grid, float."""
    levels = levels_from_eta(eta)
    delta.add_(original).clamp_(0, 1).mul_(255).round_()
    bound = (original * 255).round_().sub_(levels)
    torch.maximum(delta, bound, out=delta)
    torch.minimum(delta, bound.add_(2 * levels), out=delta)
    return delta
