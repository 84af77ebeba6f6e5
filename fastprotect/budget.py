"""Budget rules that hide δ from the eye, not from a metric (issue 29, item 3), and the lift's "flat" criterion (item 4).

The texture budget (``fastprotect.generator``) gives δ room where the luma's local contrast is high. Two things the eye
sees that the contrast does not know about:

* **an isolated edge is not texture.** A cartoon outline or an eyebrow has as much local contrast as foliage, but
  masks a change far less: the eye sees the clean line, and a change beside it reads as a halo. The structure tensor
  tells them apart: in a window around an edge the gradients share one orientation (coherence near 1), in texture
  they point every way (coherence low). :func:`edge_coherence` measures it; :func:`edge_damping` turns it into a
  budget factor 1 − s·coherence^EDGE_POWER (``GeneratorConfig.edge_suppression`` = s).
* **a colour change on a neutral area shows at once.** On greys, black outlines and white paper any tint is new; on
  skin a green or olive tint is off-hue. :func:`hide_colour` keeps δ's brightness (BT.601 luma) and scales its colour
  part (δ − Y(δ)) by the local chroma of the clean image ÷ ``chroma_reference``, at most 1: a saturated fill keeps all
  of δ's colour, a grey keeps none, skin (JPEG chroma ≈ 0.1–0.15) keeps part.

The lift's "flat" criterion (:func:`flat_share`, :func:`flat_rms`): the minimum energy used to judge an image by δ's RMS
over the whole frame, which a cartoon's outlines fool — δ sits at ±η along every outline and its RMS clears the bar while
the fills get nothing. Judged over the flat pixels only (relative contrast < FLAT_LEVEL), it fires on what is unprotected.
Every function takes B×C×H×W tensors in [0, 1] (δ: [−η, η]) and returns a new tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .metrics import luma

# The coherence is raised to this power before it damps the budget: natural texture has coherences spread over
# 0.2–0.7 in a 7×7 window, a clean outline ≥ 0.9; the fourth power leaves texture ≥ 76 % of its budget at 0.7 and
# takes an outline's down to (1 − s·0.66) or lower.
EDGE_POWER = 4
# The structure tensor's trace below this ((luma units / px)², a gradient of ~0.004 per px) is "no structure":
# the coherence is then 0 there, and the contrast budget (already at its floor) decides.
_TRACE_EPSILON = 1e-5
# JPEG (BT.601, full range) Cb and Cr of an RGB value; the chroma of a colour is the length of (Cb, Cr).
_CB = (-0.168736, -0.331264, 0.5)
_CR = (0.5, -0.418688, -0.081312)
# A pixel is "flat" (a fill, a plain background) where its local contrast is below this fraction of contrast_reference.
FLAT_LEVEL = 0.25


def _box(values: torch.Tensor, window: int) -> torch.Tensor:
    pad = window // 2
    return F.avg_pool2d(F.pad(values, (pad, pad, pad, pad), mode="replicate"), window, stride=1)


def edge_coherence(images: torch.Tensor, window: int) -> torch.Tensor:
    """Structure-tensor coherence of the BT.601 luma, B×1×H×W in [0, 1]: (λ₁ − λ₂) / (λ₁ + λ₂) of the gradients' outer
    products averaged over a ``window``² square. 1: every gradient in the window has one orientation (an isolated edge
    or line); near 0: gradients of every orientation (texture) or none (flat; see _TRACE_EPSILON)."""
    y = F.pad(luma(images.float()), (1, 1, 1, 1), mode="replicate")
    gx = (y[..., 1:-1, 2:] - y[..., 1:-1, :-2]) / 2
    gy = (y[..., 2:, 1:-1] - y[..., :-2, 1:-1]) / 2
    jxx, jyy, jxy = (_box(t, window) for t in (gx * gx, gy * gy, gx * gy))
    trace = jxx + jyy
    spread = ((jxx - jyy).pow(2) + 4 * jxy.pow(2)).sqrt()  # λ₁ − λ₂
    return (spread / trace.clamp_min(_TRACE_EPSILON)).clamp(0, 1) * (trace > _TRACE_EPSILON)


def edge_damping(images: torch.Tensor, window: int, suppression: float) -> torch.Tensor:
    """The budget factor 1 − suppression · coherence^EDGE_POWER, B×1×H×W in [1 − suppression, 1]; all ones at 0."""
    if suppression <= 0:
        return images.new_ones(images.shape[0], 1, *images.shape[-2:])
    return 1 - suppression * edge_coherence(images, window).pow(EDGE_POWER)


def local_chroma(images: torch.Tensor, window: int) -> torch.Tensor:
    """The least JPEG chroma √(Cb² + Cr²) within a ``window``² square around each pixel, B×1×H×W ([0, 1] units; a pure
    red has 0.53, skin ≈ 0.1–0.15, a grey or black 0). The least, not the mean: a black outline on a saturated fill makes
    the fill's pixels beside it neutral too, which is where a tinted halo would show."""
    cb = (images.float() * images.new_tensor(_CB).view(1, 3, 1, 1)).sum(1, keepdim=True)
    cr = (images.float() * images.new_tensor(_CR).view(1, 3, 1, 1)).sum(1, keepdim=True)
    chroma = (cb * cb + cr * cr).sqrt()
    pad = window // 2
    return -F.max_pool2d(F.pad(-chroma, (pad, pad, pad, pad), mode="replicate"), window, stride=1)


def hide_colour(delta: torch.Tensor, images: torch.Tensor, reference: float, window: int) -> torch.Tensor:
    """δ with its brightness kept and its colour part (δ − Y(δ)) scaled by clamp(local chroma / ``reference``, 0, 1):
    no new tint on neutral areas, the full change on saturated ones. ``reference`` ≤ 0 leaves δ unchanged."""
    if reference <= 0:
        return delta
    brightness = luma(delta)
    scale = (local_chroma(images, window) / reference).clamp(0, 1).to(delta.dtype)
    return brightness + scale * (delta - brightness)


def flat_mask(relative: torch.Tensor) -> torch.Tensor:
    """Which pixels are flat (a fill): relative contrast (local contrast ÷ contrast_reference) below FLAT_LEVEL."""
    return relative < FLAT_LEVEL


def flat_share(relative: torch.Tensor) -> torch.Tensor:
    """The share of each image's pixels that are flat (:func:`flat_mask`): B values in [0, 1]."""
    return flat_mask(relative).float().flatten(1).mean(1)


def flat_rms(delta: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
    """δ's RMS over each image's flat pixels only (all three channels): B values; 0 where an image has none."""
    flat = flat_mask(relative).float()
    energy = (delta.pow(2).sum(1, keepdim=True) / delta.shape[1] * flat).flatten(1).sum(1)
    return (energy / flat.flatten(1).sum(1).clamp_min(1)).sqrt()
