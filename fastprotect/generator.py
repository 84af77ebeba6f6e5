"""PerturbationGenerator: a small image-conditioned network that writes the protection in one pass.

The paper's mixture (:mod:`fastprotect.mixture`) picks one of K fixed patterns per image, so its
energy sits in a flat sky as much as in foliage (flat-region ratio 0.87, issue 10). The generator
instead *places* the perturbation where the image hides it, and is trained against the encoder with
the visibility budget already in the loop:

    δ(x) = cap_r( η · m(x) ⊙ tanh(G(x, m(x), y)) )

* ``m(x)`` — the texture budget map, computed, not learned: ``clamp(c(x) / c0, floor, 1) ** γ``
  with ``c`` the local contrast (:func:`fastprotect.metrics.local_contrast`: std of BT.601 luma in a 7×7 window,
  the quantity the flat-region energy ratio ranks pixels by; :meth:`PerturbationGenerator.budget`). A flat
  sky (c ≈ 0) gets ``floor``·η at most, texture gets the full η. Being computed, no optimiser can
  bend it to fool a perceptual network (issue 10's measurement traps).
* ``G`` — a residual conv net (stride-4 trunk, ≈ 0.4 M parameters for width 32), fully
  convolutional, so any size and aspect ratio. It sees the image, the budget map and the target
  pattern ``y`` drawn over the image (:func:`fastprotect.targets.target_window`): a convolution has
  no idea where it is in the image, and the pull is towards a pattern at fixed positions.
* ``net_downscale`` k — G runs on a copy shrunk k× (2 for the bundled checkpoint) and its pattern is
  upsampled back (bilinear) before the budget map (full resolution) is applied. Detail finer than k
  pixels is what JPEG's quantisation and a resize remove first and what buys the least damage per
  unit of energy (measured, docs/EVALUATION.md), and the network costs 1/k² as much.
* ``cap_r`` — an energy cap: the whole δ is scaled down so that its RMS is at most ``rms_levels``
  8-bit levels (PSNR ≥ 20·log10(255 / rms_levels) before rounding), whatever the image.
* a minimum energy (``fill_rms_levels``, 2.5 levels in the bundled checkpoint, 0 = off): an image whose δ stays
  below it gets its floor raised (:func:`fill_floor`) and its δ written along JPEG's blue-difference axis
  only (:func:`blue_yellow`, ``fill_form``): flat fills, where the budget finds no texture.

No encoder runs at protection time: the cost is the generator's forward pass. Training
(``python -m train.generator``) pulls the encoder's latent and features of x + δ towards a target
pattern's, through random resizes, blur and noise (expectation over transformations).

A checkpoint folder holds ``config.json`` (``method: "generator"``, a :class:`GeneratorConfig`),
``model.safetensors`` and a model card, like the mixture's; ``fastprotect.sources`` tells them apart by
``method``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import budget as budget_rules
from .checkpoint_config import check_encoder_and_budget, check_integers, read_config_strictly
from .hub import load_state_strictly
from .images import fit_within, is_levels, levels_to_pixels, pixel_rows, resize_image, resize_tensor
from .metrics import local_contrast, luma
from .strength import compose_, compose_levels_
from .targets import target_window
from .vocabulary import DEFAULT_ETA, TARGET_NAMES, AutoencoderKind, check_min_energy

METHOD = "generator"
FORMAT_VERSION = 7  # read_config migrates versions 1 (no ``net_downscale``: a full-resolution network), 2 (no
# minimum energy: ``fill_rms_levels`` 0, off), 3 (its minimum energy lifted brightness and colour), 4 (a boolean
# ``fill_colour_only`` instead of ``fill_form``), 5 (no ``fill_block``: a lift with pixel detail) and 6 (no edge or
# colour rule, the lift judged by δ's RMS over the whole image): MIGRATIONS
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


# How a lifted image's δ is written (``GeneratorConfig.fill_form``), in JPEG's Y Cb Cr terms (BT.601, full range):
# "blue-yellow": Cb only (Y and Cr 0), "colour": Cb and Cr (Y 0, :func:`colour_only`), "both": δ as it is.
FILL_FORMS = ("blue-yellow", "colour", "both")
# Each form's name in tables (the benchmarks' row labels) and the JPEG components it keeps, where it drops some.
FILL_FORM_NAMES = {"blue-yellow": "blue-yellow only", "colour": "colour only", "both": "brightness and colour"}
FILL_FORM_COMPONENTS = {"blue-yellow": "JPEG's Cb", "colour": "Cb and Cr", "both": ""}
# What the minimum energy judges an image by (``GeneratorConfig.fill_criterion``): "rms": δ's RMS over the whole image
# (format ≤ 6); "flat": δ's RMS over its flat pixels (fastprotect.budget.flat_rms), for images whose flat pixels make at
# least ``fill_flat_share`` of the frame: a cartoon's outlines no longer hide its untouched fills.
FILL_CRITERIA = ("rms", "flat")


class GeneratorCheckpointError(ValueError):
    """A generator checkpoint that is malformed: wrong fields, keys or shapes."""


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild the generator and use it exactly as it was trained."""

    method: str = METHOD
    format_version: int = FORMAT_VERSION
    width: int = 32  # channels at full resolution; the stride-4 trunk has 2 × width
    blocks: int = 4  # residual blocks in the trunk
    eta: float = DEFAULT_ETA  # L∞ budget the generator was trained for (scaled linearly at inference)
    rms_levels: float = 4.0  # energy cap at eta: RMS of δ in 8-bit levels (scaled with η at inference)
    contrast_reference: float = 0.04  # c0: local contrast (luma std, [0, 1] units) that gets the full budget
    mask_floor: float = 0.1  # budget fraction left to perfectly flat regions
    # A minimum energy: when an image's δ has an RMS below fill_rms_levels (at eta, scaled with η like
    # the cap) — large flat areas, where the budget finds no texture and δ barely changes what a mimic
    # sees — its floor is raised, for that image only, up to fill_floor_max until δ reaches it
    # (:func:`fill_floor`). 0: off (older checkpoints). Inference-time: the network is unchanged.
    fill_rms_levels: float = 0.0
    fill_floor_max: float = 0.5
    # How a lifted image's δ is written (a FILL_FORMS entry); the floor is raised until that form reaches the minimum.
    # On a flat fill a brightness pattern is what the eye sees first, and the eye resolves blue-yellow differences
    # worst of all: "colour" (brightness taken out) measured LPIPS-VGG 0.138 → 0.081 against "both" at the same
    # damage ratio to noise; "blue-yellow" (JPEG's Cb only) 2.03× noise at LPIPS-VGG 0.108 against "colour"'s 1.42× at
    # 0.082 on 47 low-energy pool images (docs/EVALUATION.md).
    fill_form: str = "blue-yellow"
    # A lifted image's δ made constant over fill_block × fill_block squares counted from its top-left corner, each
    # image's energy restored (:func:`block_constant`); 0: G's pixel detail (the default). 8 is JPEG's block grid: a
    # re-encoding at the same size keeps a square's mean colour where it removes the detail (71 % of the lifted held-out
    # images' damage left after JPEG q75 instead of 50 %), but a grid shifted by other than 4 px, a resize or no JPEG at
    # all leave the squares with less damage than the detail (benchmarks/jpeg_grid.py, docs/EVALUATION.md): measured,
    # not the default.
    fill_block: int = 0
    fill_criterion: str = "rms"
    fill_flat_share: float = 0.25
    # Budget rules for the eye (fastprotect.budget), 0 = off (format ≤ 6): edge_suppression s damps the budget by
    # 1 − s·coherence⁴ where the luma's gradients share one orientation (an isolated edge, an outline: it masks a change
    # far less than texture); chroma_reference scales δ's colour part by the clean image's local chroma ÷ it (no tint
    # on greys, outlines, near-neutral skin). Inference-time: the network and the map it sees are unchanged.
    edge_suppression: float = 0.0
    chroma_reference: float = 0.0
    mask_gamma: float = 1.0
    contrast_window: int = 7
    target: str = "mid"  # the target pattern the training pulled towards (a TARGET_NAMES entry)
    encoder_kind: AutoencoderKind = "taef2"  # the encoder it was trained against
    mimic_base: str = ""
    encoder_source: str = "madebyollin/taef2"
    encoder_subfolder: str | None = None
    work_size: int = 1024  # the generator runs on a copy whose long side is at most this
    # The network runs on a copy shrunk by this factor and its pattern is upsampled (bilinear): a
    # smoother pattern, which JPEG and resizes keep more of, at 1/k² of the network's cost (issue 10).
    net_downscale: int = 1

    def __post_init__(self) -> None:
        if self.method != METHOD:
            raise GeneratorCheckpointError(f"method must be {METHOD!r}; got {self.method!r}")
        if self.format_version != FORMAT_VERSION:
            raise GeneratorCheckpointError(f"format_version {self.format_version} is not supported (this fastprotect reads "
                                           f"{FORMAT_VERSION}, and older ones through read_config)")
        if not isinstance(self.fill_block, int) or isinstance(self.fill_block, bool) or self.fill_block < 0:
            raise GeneratorCheckpointError(f"fill_block must be an integer ≥ 0 (0: pixel detail); got {self.fill_block!r}")
        check_integers(self, ("width", "blocks", "contrast_window", "work_size", "net_downscale"), GeneratorCheckpointError, at_least=1)
        if self.contrast_window % 2 == 0:
            raise GeneratorCheckpointError(f"contrast_window must be odd; got {self.contrast_window}")
        check_encoder_and_budget(self, GeneratorCheckpointError)
        for name in ("rms_levels", "contrast_reference"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise GeneratorCheckpointError(f"{name} must be a number > 0; got {getattr(self, name)!r}")
        if not 0 <= self.mask_floor <= 1 or self.mask_gamma <= 0:
            raise GeneratorCheckpointError(f"mask_floor must be in [0, 1] and mask_gamma > 0; got {self.mask_floor}, {self.mask_gamma}")
        if not isinstance(self.fill_floor_max, (int, float)) or not 0 <= self.fill_floor_max <= 1:
            raise GeneratorCheckpointError(f"fill_floor_max must be in [0, 1]; got {self.fill_floor_max!r}")
        if self.fill_criterion not in FILL_CRITERIA:
            raise GeneratorCheckpointError(f"fill_criterion must be one of {', '.join(FILL_CRITERIA)}; got {self.fill_criterion!r}")
        for name in ("fill_flat_share", "edge_suppression"):
            if not isinstance(getattr(self, name), (int, float)) or not 0 <= getattr(self, name) <= 1:
                raise GeneratorCheckpointError(f"{name} must be in [0, 1]; got {getattr(self, name)!r}")
        if not isinstance(self.chroma_reference, (int, float)) or self.chroma_reference < 0:
            raise GeneratorCheckpointError(f"chroma_reference must be a number ≥ 0 (0: off); got {self.chroma_reference!r}")
        if self.fill_form not in FILL_FORMS:
            raise GeneratorCheckpointError(f"fill_form must be one of {', '.join(FILL_FORMS)}; got {self.fill_form!r}")
        if not isinstance(self.fill_rms_levels, (int, float)) or not 0 <= self.fill_rms_levels <= self.rms_levels:
            raise GeneratorCheckpointError(f"fill_rms_levels must be in [0, rms_levels = {self.rms_levels}]; got {self.fill_rms_levels!r}")
        if self.target not in TARGET_NAMES:
            raise GeneratorCheckpointError(f"unknown target {self.target!r}; known: {', '.join(TARGET_NAMES)}")


def relative_contrast(images: torch.Tensor, reference: float, window: int) -> torch.Tensor:
    """Local contrast ÷ ``reference``, B×1×H×W: the budget map before its floor, cap at 1 and γ."""
    return local_contrast(images, window).unsqueeze(1).div_(reference)


def _floored(relative: torch.Tensor, floor: float | torch.Tensor) -> torch.Tensor:
    if isinstance(floor, torch.Tensor):
        return torch.maximum(relative, floor.to(relative).view(-1, 1, 1, 1)).clamp(max=1)
    return relative.clamp(floor, 1)


# fill_floor estimates δ's energy on at most this many pixels (a strided subsample): a mean over
# 65 k pixels is within a fraction of a percent of the full one, and the cap itself is applied exactly.
_FILL_SAMPLE_PIXELS = 65_536


def fill_sample_stride(height: int, width: int) -> int:
    """The stride of :func:`fill_floor`'s subsample of an H×W map: at most ``_FILL_SAMPLE_PIXELS`` pixels."""
    return max(1, math.ceil(math.sqrt(height * width / _FILL_SAMPLE_PIXELS)))


def fill_floor(relative: torch.Tensor, raw: torch.Tensor, *, floor: float, ceiling: float, gamma: float,
               target_rms: float, form: str = "both", iterations: int = 20, stride: int | None = None,
               flat: torch.Tensor | None = None, flat_share: float = 0.0) -> torch.Tensor:
    """Per image, the smallest budget floor f in [floor, ceiling] at which clamp(relative, f, 1)^γ ⊙ raw
    has an RMS of at least ``target_rms`` (B values; ``ceiling`` where even that stays below).

    ``relative``: local contrast ÷ reference, B×1×H×W; ``raw``: G's pattern, B×3×H×W. The energy
    grows with f, so a bisection finds it. Images that already reach the target keep ``floor``: the
    rule only lifts images the texture budget leaves nearly untouched (flat fills, plain backgrounds).
    ``form``: how a lifted image's δ is written (:func:`in_form`): whether an image needs the lift is judged
    on ``raw``, how far its floor goes on ``raw`` in that form (computed on the subsample only). Squares
    (:func:`block_constant`) keep the energy, so they do not change it; the scaling back to ±η afterwards
    (:func:`write_lift`) can take a few percent off it. ``stride``: None, the subsample's
    (:func:`fill_sample_stride`); 1 when ``relative`` and ``raw`` are that subsample already.
    ``flat`` (B×1×H×W booleans, :func:`fastprotect.budget.flat_mask`): judge and lift by δ's RMS over those pixels
    only, and only images whose flat pixels make at least ``flat_share`` of the frame (the "flat" criterion).
    """
    if stride is None:
        stride = fill_sample_stride(*relative.shape[-2:])
    rel = relative[..., ::stride, ::stride].float().detach()
    weight = None if flat is None else flat[..., ::stride, ::stride].float()

    def rms(values: torch.Tensor) -> torch.Tensor:
        energy = values.pow(2).mean(1, keepdim=True)
        if weight is None:
            return energy.flatten(1).mean(1).sqrt()
        return ((energy * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1)).sqrt()

    def reaches(f: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        return rms(_floored(rel, f).pow(gamma) * pattern) >= target_rms

    low = torch.full((relative.shape[0],), float(floor), device=relative.device)
    needs = ~reaches(low, raw[..., ::stride, ::stride].float().detach())
    if weight is not None:
        needs = needs & (weight.flatten(1).mean(1) >= flat_share)
    if ceiling <= floor or not bool(needs.any()):
        return low
    lifted = in_form(raw[..., ::stride, ::stride].float().detach(), form)
    high = torch.full_like(low, float(ceiling))
    for _ in range(iterations):
        middle = (low + high) / 2
        reached = reaches(middle, lifted)
        high, low = torch.where(reached, middle, high), torch.where(reached, low, middle)
    return torch.where(needs, high, torch.full_like(high, float(floor)))


def colour_only(delta: torch.Tensor) -> torch.Tensor:
    """δ (B×3×H×W) without its brightness part: δ − Y(δ) in every channel, so that its BT.601 luma (the budget's
    local contrast's, :func:`fastprotect.metrics.luma`) is 0 and its colour differences (JPEG's Cb, Cr) are unchanged."""
    return delta - luma(delta)


# JPEG's (JFIF, BT.601 full range) blue difference Cb of an RGB change, and the RGB change that one unit of Cb makes
# with Y and Cr held at 0 (the Cb column of the inverse transform: R = Y + 1.402 Cr, G = Y − 0.344136 Cb − 0.714136 Cr,
# B = Y + 1.772 Cb).
_CB_OF_RGB = (-0.168736, -0.331264, 0.5)
_RGB_OF_CB = (0.0, -0.344136, 1.772)


def blue_yellow(delta: torch.Tensor) -> torch.Tensor:
    """δ (B×3×H×W) reduced to its blue difference: the change with δ's Cb and no Y or Cr — more blue and less green
    where Cb > 0, yellower where Cb < 0. The axis the eye resolves worst (its blue-yellow channel has the lowest
    spatial acuity) and the one JPEG stores at half resolution."""
    cb = (delta * delta.new_tensor(_CB_OF_RGB).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return cb * delta.new_tensor(_RGB_OF_CB).view(1, 3, 1, 1)


def block_constant(delta: torch.Tensor, block: int) -> torch.Tensor:
    """δ (B×C×H×W) replaced by its means over block × block squares counted from the top-left corner (the last row and
    column of squares cut by the border average what they hold), each image scaled back to its RMS: the same energy,
    no detail inside a square. ``block`` ≤ 1 leaves δ unchanged."""
    if block <= 1:
        return delta
    height, width = delta.shape[-2:]
    means = F.avg_pool2d(delta, block, ceil_mode=True)
    squares = means.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)[..., :height, :width]
    before, after = (t.pow(2).flatten(1).mean(1).sqrt() for t in (delta, squares))
    return squares * (before / after.clamp_min(1e-12)).view(-1, 1, 1, 1)


def in_form(delta: torch.Tensor, form: str) -> torch.Tensor:
    """δ written in a FILL_FORMS ``form``: :func:`blue_yellow`, :func:`colour_only`, or unchanged ("both")."""
    if form not in FILL_FORMS:
        raise ValueError(f"unknown fill form {form!r}; known: {', '.join(FILL_FORMS)}")
    return blue_yellow(delta) if form == "blue-yellow" else colour_only(delta) if form == "colour" else delta


def write_lift(delta: torch.Tensor, form: str, block: int, limit: float) -> torch.Tensor:
    """A lifted image's δ as it is written: in its ``form`` (:func:`in_form`), constant over ``block``-px squares
    (:func:`block_constant`), then scaled back per pixel, all channels alike, where a channel leaves ±``limit`` (the
    form and the squares are kept; blue-yellow puts 1.772·Cb in blue)."""
    written = block_constant(in_form(delta, form), block)
    return written * (limit / written.abs().amax(1, keepdim=True).clamp_min(1e-12)).clamp(max=1)


# protect_image writes its result in its first pass where the subsample's δ has an RMS below this share of the cap.
_SPECULATE_BELOW = 0.9


def _sample_rms(budget: torch.Tensor, pattern: torch.Tensor, lifted: torch.Tensor, form: str, eta: float) -> torch.Tensor:
    """δ's RMS per image estimated on protect_image's strided subsample (budget B×1×h×w, G's pattern B×3×h×w)."""
    delta = pattern * (budget * eta)
    if bool(lifted.any()):
        delta = torch.where(lifted.view(-1, 1, 1, 1), write_lift(delta, form, 0, eta), delta)
    return delta.pow(2).flatten(1).mean(1).sqrt()


def cap_energy(delta: torch.Tensor, rms: float) -> torch.Tensor:
    """Scale each image's δ (B×3×H×W) down so that its RMS is at most ``rms`` ([0, 1] units)."""
    current = delta.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12)
    return delta * (rms / current).clamp(max=1).view(-1, 1, 1, 1)


class _Upsampler:
    """Bilinear upsampling of a small pattern B×C×h×w to H×W, any band of rows at a time: PyTorch's rule for
    ``interpolate(mode="bilinear", align_corners=False)`` (source = (i + ½)·h/H − ½, clamped at 0; the two nearest
    rows and columns weighted linearly), applied to the rows here, then to the columns by PyTorch's own linear
    interpolation (its vectorised kernel; per-column gathers took four times as long). The same values as one call on
    the whole image up to float rounding, without the full-size copy."""

    def __init__(self, pattern: torch.Tensor, height: int, width: int) -> None:
        self.pattern = pattern.float()
        self.rows = _linear_taps(pattern.shape[-2], height, pattern.device)
        self.width = width

    def __call__(self, start: int, stop: int, step: int = 1) -> torch.Tensor:
        """Output rows start, start + step, … < stop; with step > 1 every step-th column too (a strided subsample)."""
        low, high, weight = (t[start:stop:step] for t in self.rows)
        rows = torch.lerp(self.pattern[..., low, :], self.pattern[..., high, :], weight.view(-1, 1))
        batch, channels, count, small = rows.shape
        if small != self.width:
            rows = F.interpolate(rows.reshape(batch * channels, count, small), size=self.width, mode="linear", align_corners=False)
        return rows.reshape(batch, channels, count, self.width)[..., ::step]


def _linear_taps(size_in: int, size_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output index: its lower and upper source index and the upper one's weight (see :class:`_Upsampler`)."""
    source = ((torch.arange(size_out, device=device, dtype=torch.float32) + 0.5) * (size_in / size_out) - 0.5).clamp_min(0)
    low = source.long()
    return low, (low + 1).clamp(max=size_in - 1), source - low


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(x)))


class GeneratorNet(nn.Module):
    """G(x, m, y) -> B×3×H×W raw pattern in (−1, 1). Input: the image and the target in [−1, 1],
    the budget map.

    Full-resolution stem and head (the pattern is pixel-sharp where the encoder's first layers
    look), a stride-4 residual trunk for context (which texture, which edge), a skip between them.
    Sizes not divisible by 4 are padded (replicate) and cropped back.
    """

    def __init__(self, width: int = 32, blocks: int = 4) -> None:
        super().__init__()
        wide = 2 * width
        self.stem = nn.Conv2d(7, width, 3, padding=1)
        self.down1 = nn.Conv2d(width, wide, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(wide, wide, 3, stride=2, padding=1)
        self.trunk = nn.Sequential(*[_Residual(wide) for _ in range(blocks)])
        self.up1 = nn.Conv2d(wide, wide, 3, padding=1)
        self.up2 = nn.Conv2d(wide, width, 3, padding=1)
        self.fuse = nn.Conv2d(2 * width, width, 3, padding=1)
        self.head = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, images: torch.Tensor, budget: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % 4, (-width) % 4
        x = torch.cat([images * 2 - 1, budget, target.expand_as(images) * 2 - 1], dim=1)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skip = F.silu(self.stem(x))
        h = F.silu(self.down2(F.silu(self.down1(skip))))
        h = self.trunk(h)
        h = F.silu(self.up1(F.interpolate(h, scale_factor=2, mode="nearest")))
        h = F.silu(self.up2(F.interpolate(h, scale_factor=2, mode="nearest")))
        h = F.silu(self.fuse(torch.cat([h, skip], dim=1)))
        return torch.tanh(self.head(h))[..., :height, :width]


class PerturbationGenerator(nn.Module):
    """The network plus its budget rule: :meth:`perturbation` gives δ(x) within ±η and the energy cap."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.net = GeneratorNet(config.width, config.blocks)

    def budget(self, images: torch.Tensor, raw: torch.Tensor | None = None, *, min_energy: float | None = None) -> torch.Tensor:
        """m(x) = clamp(c / contrast_reference, floor, 1) ** mask_gamma, B×1×H×W, c the clean image's local contrast
        (:func:`relative_contrast`). With ``raw`` (G's pattern at the images' size) and a minimum energy on
        (``min_energy``, :meth:`check_min_energy`), each image's floor is raised as far as its δ needs to reach it
        (:func:`fill_floor`); without ``raw``, the fixed floor ``mask_floor``."""
        return self._budget_and_lift(images, raw, self.check_min_energy(min_energy))[0]

    def check_min_energy(self, levels: float | None) -> float:
        """The minimum energy to use, RMS levels at the training η (0 = off): ``levels``, or the checkpoint's own
        (``fill_rms_levels``) for None. The library's one check of it: a number from 0 to the energy cap
        (``rms_levels``); a ValueError in one sentence otherwise."""
        if levels is None:
            return self.config.fill_rms_levels
        value, cap = check_min_energy(levels), self.config.rms_levels  # a number ≥ 0 (the vocabulary's sentence)
        if value > cap:
            raise ValueError(f"min_energy {value:g}: must be between 0 (off) and this checkpoint's energy cap, {cap:g} levels")
        return value

    def _budget_and_lift(self, images: torch.Tensor, raw: torch.Tensor | None, min_energy: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(m(x), which images the minimum energy ``min_energy`` (checked) lifted: B booleans). With ``raw`` (what is
        written), the budget rules of fastprotect.budget apply when the checkpoint turns them on."""
        c = self.config
        relative = relative_contrast(images, c.contrast_reference, c.contrast_window)
        flat = budget_rules.flat_mask(relative) if c.fill_criterion == "flat" else None  # judged before any damping
        if raw is not None and c.edge_suppression > 0:  # what is written; the network's own input map stays as trained
            relative = relative * budget_rules.edge_damping(images, c.contrast_window, c.edge_suppression)
        floor, lifted = self._floor(relative, raw, min_energy, flat=flat)
        return self._shape_budget(relative, floor), lifted

    def _shape_budget(self, relative: torch.Tensor, floor: float | torch.Tensor) -> torch.Tensor:
        """The budget map from the relative contrast and the floor: clamp(relative, floor, 1) ** mask_gamma. Pixel by
        pixel, so that :meth:`protect_image` can apply it band by band; the one place of this formula."""
        return _floored(relative, floor).pow(self.config.mask_gamma)

    def _floor(self, relative: torch.Tensor, raw: torch.Tensor | None, min_energy: float,
               stride: int | None = None, flat: torch.Tensor | None = None) -> tuple[float | torch.Tensor, torch.Tensor]:
        """The budget's floor (``mask_floor``, or per image as far as the minimum energy lifts it) and which images
        were lifted. ``stride``, ``flat``: see :func:`fill_floor` (stride 1: ``relative`` and ``raw`` are its
        subsample already)."""
        c = self.config
        lifted = torch.zeros(relative.shape[0], dtype=torch.bool, device=relative.device)
        floor: float | torch.Tensor = c.mask_floor
        if raw is not None and min_energy > 0 and c.fill_floor_max > c.mask_floor:
            # δ = η·m⊙G and the minimum scales with η like the cap: whether δ reaches it does not depend on η.
            floor = fill_floor(relative, raw, floor=c.mask_floor, ceiling=c.fill_floor_max, gamma=c.mask_gamma,
                               target_rms=min_energy / 255 / c.eta, form=c.fill_form, stride=stride,
                               flat=flat, flat_share=c.fill_flat_share)
            lifted = floor > c.mask_floor
        return floor, lifted

    def target(self, height: int, width: int, **window) -> torch.Tensor:
        """The target pattern over an image of height × width (``window``: see target_window)."""
        return target_window(self.config.target, height, width, **window)

    def raw(self, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """G's output for images B×3×H×W: the pattern before budget and cap, at the images' size.

        The network sees a copy of :meth:`network_size` (its budget map and target window at that
        size) and its pattern is upsampled back (bilinear): one resize down, one up, whatever the
        photo's size."""
        return resize_tensor(self.small_pattern(images, target), *images.shape[-2:])

    def small_pattern(self, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """G's output at :meth:`network_size`, before it is upsampled to the images' size (:meth:`raw`), in the
        images' dtype (float32 for 8-bit levels, :func:`fastprotect.images.resize_image`). The network runs in its parameters' dtype (float16 on a GPU with ``--half``: the pattern
        is bounded by tanh, and the budget, cap and rounding that follow stay in float32)."""
        size = self.network_size(*images.shape[-2:])
        small = resize_image(images, *size).contiguous(memory_format=torch.channels_last)  # 8-bit levels: float32
        if target is None:
            target = self.target(*size)
        elif target.shape[-2:] != size:
            target = resize_tensor(target, *size)
        dtype = self.net.head.weight.dtype
        budget = self.budget(small)
        return self.net(small.to(dtype), budget.to(dtype), target.to(small.device, dtype)).to(small.dtype).contiguous()

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Where the network runs for an H×W image: the working copy (long side ≤ ``work_size``, cost
        bounded for large photos) shrunk ``net_downscale``× more, at least 8 px a side."""
        work_h, work_w = fit_within(height, width, self.config.work_size, min_side=8)
        k = self.config.net_downscale
        return max(8, round(work_h / k)), max(8, round(work_w / k))

    def perturbation(self, images: torch.Tensor, eta: float | None = None, *, raw: torch.Tensor | None = None,
                     target: torch.Tensor | None = None, min_energy: float | None = None) -> torch.Tensor:
        """δ for images B×3×H×W in [0, 1]: ``cap(η · m ⊙ G)``; the cap scales with η (``rms_levels``
        is stated at the training η). An image the minimum energy lifts gets that written in its ``fill_form``
        (:func:`in_form`). ``raw``: G's output when already computed (e.g. upsampled from a working
        copy); ``target``: the pattern window (default: over the whole image); ``min_energy``: the minimum energy
        in RMS levels at the training η (None: the checkpoint's ``fill_rms_levels``; 0: off). Differentiable with
        respect to the network's parameters."""
        return self.perturbation_and_budget(images, eta, raw=raw, target=target, min_energy=min_energy)[0]

    def perturbation_and_budget(self, images: torch.Tensor, eta: float | None = None, *, raw: torch.Tensor | None = None,
                                target: torch.Tensor | None = None, min_energy: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(:meth:`perturbation`, the budget map m it used): the Protector shows m without computing it twice."""
        eta = self.config.eta if eta is None else eta
        if raw is None:
            raw = self.raw(images, target)
        budget, lifted = self._budget_and_lift(images, raw, self.check_min_energy(min_energy))
        delta = eta * budget * raw
        # colour kept small where the image is neutral (fastprotect.budget.hide_colour); a lifted image's δ is
        # written in its own form below, from the unhidden δ
        hidden = budget_rules.hide_colour(delta, images, self.config.chroma_reference, self.config.contrast_window)
        if not bool(lifted.any()):
            delta = hidden
        elif (self.config.fill_form != "both" or self.config.fill_block > 1) and bool(lifted.any()):
            # Where a pixel is at 0 or 1 (white, black, a saturated fill's empty channel) the protected image's
            # rounding and clipping still turn part of it into brightness: keeping the change inside what each
            # pixel can take instead left the flat held-out cartoons without any lift (measured, docs/EVALUATION.md).
            written = write_lift(delta, self.config.fill_form, self.config.fill_block, eta)
            delta = written if bool(lifted.all()) else torch.where(lifted.view(-1, 1, 1, 1), written, hidden)
        else:
            delta = torch.where(lifted.view(-1, 1, 1, 1), delta, hidden)
        rms = self.config.rms_levels / 255 * eta / self.config.eta
        return cap_energy(delta, rms), budget

    @torch.no_grad()
    def protect_image(self, images: torch.Tensor, eta: float | None = None, *, min_energy: float | None = None,
                      pattern: torch.Tensor | None = None, band_rows: int = 256, levels: bool = False,
                      keep_budget: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inference: (the protected images — x + δ rounded to the 8-bit grid within ±η, as
        :func:`fastprotect.strength.compose_` makes it from :meth:`perturbation_and_budget`'s δ — and the budget map).

        The same numbers as that plain path up to float rounding (tests/test_generator.py: within one 8-bit level,
        nearly all pixels equal), with the full-resolution work done band by band (``band_rows`` rows): the clean
        image is read a band at a time (float in [0, 1], or 8-bit levels converted per band: :func:`pixel_rows`), its
        local contrast computed per band with the window's rows around it, G's pattern upsampled where it is used
        (:class:`_Upsampler`). A first pass shapes the budget and sums δ's energy; a second makes the same δ again,
        applies the energy cap and the 8-bit composition and writes the result. Besides the input, the memory is the
        budget map, the output and a few bands: with ``levels`` the output is uint8 levels (a quarter of float32; the
        same pixels × 255). ``keep_budget=False`` returns None for the map (callers that never show it let it go).
        Where the lift writes squares (``fill_block`` > 1, a whole-image operation), G's copy is larger than the image
        or a budget rule is on, the plain path runs (on a float copy of levels).
        ``pattern``: :meth:`small_pattern`'s output when already computed (the Protector times the network apart)."""
        eta = self.config.eta if eta is None else eta
        min_energy = self.check_min_energy(min_energy)
        height, width = images.shape[-2:]
        pattern = self.small_pattern(images) if pattern is None else pattern
        # The budget rules (fastprotect.budget: edge damping, colour hiding, the flat criterion) need whole-image
        # neighbourhoods; a checkpoint that turns one on runs the plain path.
        c = self.config
        rules = c.edge_suppression > 0 or c.chroma_reference > 0 or c.fill_criterion != "rms"
        plain = rules or pattern.shape[-2] > height or pattern.shape[-1] > width
        if not plain:
            relative = self._banded_relative_contrast(images, band_rows)
            upsample = _Upsampler(pattern, height, width)
            stride = fill_sample_stride(height, width)
            sample, sample_pattern = relative[..., ::stride, ::stride], upsample(0, height, stride)
            floor, lifted = self._floor(sample, sample_pattern, min_energy, stride=1)
            plain = self.config.fill_block > 1 and bool(lifted.any())
        if plain:
            x = levels_to_pixels(images)
            delta, budget = self.perturbation_and_budget(x, eta, raw=resize_tensor(pattern, height, width), min_energy=min_energy)
            protected = compose_(x, delta.clamp_(-eta, eta), eta)
            return (protected.mul(255).round_().to(torch.uint8) if levels else protected), (budget if keep_budget else None)
        budget = relative  # becomes the budget, band by band, in the first pass
        bands = [(start, min(height, start + band_rows)) for start in range(0, height, band_rows)]
        rms = self.config.rms_levels / 255 * eta / self.config.eta  # the energy cap
        out = torch.empty(images.shape, dtype=torch.uint8 if levels else torch.float32, device=images.device)

        def write(start: int, stop: int, delta: torch.Tensor) -> None:  # x + δ on the 8-bit grid within ±η, into out
            written = compose_levels_(pixel_rows(images, start, stop), delta.clamp_(-eta, eta), eta)
            out[..., start:stop, :] = written if levels else written.div_(255)

        def delta_of(start: int, stop: int) -> torch.Tensor:
            """δ = η · m ⊙ G on rows start:stop, written in its form where lifted: the same numbers in both passes."""
            delta = upsample(start, stop).mul_(budget[..., start:stop, :] * eta)
            if bool(lifted.any()):
                written = write_lift(delta, self.config.fill_form, 0, eta)
                delta = written if bool(lifted.all()) else torch.where(lifted.view(-1, 1, 1, 1), written, delta)
            return delta

        # Where the subsample's δ stays well below the cap (an image the cap will not scale: flat ones, lifted ones),
        # the first pass also writes the result as if the scale were 1, and the second pass is not needed when it is.
        # Only a guess about the cost: when the cap does act after all, the second pass writes every band again.
        speculate = bool((_sample_rms(self._shape_budget(sample, floor), sample_pattern, lifted, self.config.fill_form, eta)
                          < _SPECULATE_BELOW * rms).all())
        energy = torch.zeros(images.shape[0], dtype=torch.float64, device=images.device)
        for start, stop in bands:  # the budget shaped, δ's energy summed
            band_budget = budget[..., start:stop, :]
            band_budget.copy_(self._shape_budget(band_budget, floor))
            delta = delta_of(start, stop)
            flat = delta.reshape(images.shape[0], 1, -1)
            energy += torch.bmm(flat, flat.transpose(1, 2)).view(-1)  # Σδ² per image: a BLAS dot, float32 per band
            if speculate:
                write(start, stop, delta)
        # cap_energy's scale, from the summed energy: each image's δ scaled down to an RMS of at most rms
        current = (energy / (images[0].numel())).sqrt().clamp_min(1e-12)
        scale = (rms / current).clamp(max=1).to(torch.float32).view(-1, 1, 1, 1)
        if not speculate or bool((scale < 1).any()):  # δ · 1 is δ: the first pass's result stands where nothing scaled
            for start, stop in bands:
                write(start, stop, delta_of(start, stop).mul_(scale))
        return out, (budget if keep_budget else None)

    def _banded_relative_contrast(self, images: torch.Tensor, band_rows: int, *, whole_floats: bool = True) -> torch.Tensor:
        """:func:`relative_contrast` of the whole images, B×1×H×W, computed ``band_rows`` rows at a time from float
        rows (:func:`pixel_rows`) with the window's reach of rows around each band: every pixel's window sum adds the
        same numbers in the same order as on the whole image, and the reflection at the image's top and bottom is the
        band's own there, so the same values bit for bit (tests/test_generator.py)."""
        c = self.config
        if whole_floats and not is_levels(images):  # a float image is there whole: one call, no band-edge copies
            return relative_contrast(images, c.contrast_reference, c.contrast_window)
        reach, height = c.contrast_window // 2, images.shape[-2]
        out = torch.empty((images.shape[0], 1, *images.shape[-2:]), dtype=torch.float32, device=images.device)
        for start in range(0, height, band_rows):
            stop = min(height, start + band_rows)
            low, high = max(0, start - reach), min(height, stop + reach)
            band = relative_contrast(pixel_rows(images, low, high), c.contrast_reference, c.contrast_window)
            out[..., start:stop, :] = band[..., start - low : stop - low, :]
        return out

    def forward(self, images: torch.Tensor, eta: float | None = None) -> torch.Tensor:
        return self.perturbation(images, eta)

    # ----------------------------------------------------------------------------- files
    def save_pretrained(self, folder: str | Path, *, card: str | None = None) -> Path:
        """config.json + model.safetensors (+ README.md when ``card`` is given) in ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "method": METHOD})
        if card is not None:
            (folder / CARD_NAME).write_text(card)
        return folder

    @classmethod
    def from_pretrained(cls, location: str | Path, **hub: Any) -> PerturbationGenerator:
        """Load strictly from a local folder or a Hub repo id (``hub``: revision, token, cache_dir,
        local_files_only, force_download). Problems are one-line errors
        (``WeightsUnavailableError`` / :class:`GeneratorCheckpointError`)."""
        from .hub import resolve_file

        hint = "Pass a local checkpoint folder (--checkpoint or FASTPROTECT_CHECKPOINT)."
        config = read_config(resolve_file(location, CONFIG_NAME, hint=hint, **hub))
        weights = resolve_file(location, WEIGHTS_NAME, hint=hint, **hub)
        model = cls(config)
        load_state_strictly(model, weights, GeneratorCheckpointError, what="the config")
        return model.eval()

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def with_config(self, **changes: Any) -> PerturbationGenerator:
        """The same weights under a config with ``changes`` (an operating point: another energy cap or
        texture-budget floor; the network itself is unchanged), in eval mode."""
        model = type(self)(replace(self.config, **changes))
        model.load_state_dict(self.state_dict())
        return model.eval()


# Older format versions -> the fields they lack, with the values that keep their behaviour.
MIGRATIONS: dict[int, dict[str, Any]] = {
    # 1 and 2 had no minimum energy: one asked of them now (``with_config``, ``min_energy=``) is today's form.
    # 3's was in brightness and colour, and a version-3 checkpoint keeps what it was measured with; 4 named its form
    # with a boolean (read by _named_form). Every version before 6 lifted with G's pixel detail (no ``fill_block``).
    # Every version before 7 had no edge or colour rule and judged the lift by δ's RMS over the whole image (_BEFORE_7).
    1: {"net_downscale": 1, "fill_rms_levels": 0.0, "fill_floor_max": 0.5, "fill_form": GeneratorConfig.fill_form, "fill_block": 0},
    2: {"fill_rms_levels": 0.0, "fill_floor_max": 0.5, "fill_form": GeneratorConfig.fill_form, "fill_block": 0},
    3: {"fill_form": "both", "fill_block": 0},
    4: {"fill_block": 0},
    5: {"fill_block": 0},
    6: {},
}
_BEFORE_7 = {"fill_criterion": "rms", "fill_flat_share": 0.25, "edge_suppression": 0.0, "chroma_reference": 0.0}
for _fields in MIGRATIONS.values():
    _fields.update(_BEFORE_7)


def _named_form(raw: dict[str, Any]) -> dict[str, Any]:
    """A version-4 config's ``fill_colour_only`` (true: colour, false: brightness and colour) as its ``fill_form``."""
    if "fill_colour_only" not in raw:
        return raw
    raw = dict(raw)
    colour_only_flag = raw.pop("fill_colour_only")
    if not isinstance(colour_only_flag, bool):
        raise GeneratorCheckpointError(f"fill_colour_only must be true or false; got {colour_only_flag!r}")
    return {**raw, "fill_form": "colour" if colour_only_flag else "both"}


def _to_current_format(raw: dict[str, Any]) -> dict[str, Any]:
    """A config dict of an older format version (MIGRATIONS) as the current one; others as they are."""
    version = raw.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version in MIGRATIONS:
        return {**MIGRATIONS[version], **(_named_form(raw) if version == 4 else raw), "format_version": FORMAT_VERSION}
    return raw


def read_config(path: str | Path) -> GeneratorConfig:
    """config.json -> GeneratorConfig, strictly (every field, no other)."""
    return read_config_strictly(path, GeneratorConfig, GeneratorCheckpointError, _to_current_format)


def psnr_floor_db(config: GeneratorConfig) -> float:
    """The PSNR the energy cap guarantees before 8-bit rounding: 20·log10(255 / rms_levels)."""
    return 20 * math.log10(255 / config.rms_levels)
