"""A one-line verdict on one protected image, from numbers measured on the spot.

Two questions a person asks, answered on a small copy in about a second on a CPU:

* **How visible?** LPIPS (AlexNet) between the clean and the protected copy, read on the scale in
  :data:`VISIBILITY_SCALE`.
* **How strong?** The mimic damage of the protection divided by the damage of random noise with the
  same energy (the same PSNR, :func:`fastprotect.evaluation.matched_noise`). Damage is
  LPIPS(D(E(x̂)), x) − LPIPS(D(E(x)), x) with the Protector's own autoencoder (E, D): how much farther
  from the image a fine-tuner's view of the protected copy is than its view of the clean one. A
  ratio near 1 means the perturbation does no more than noise of the same strength would.

The copy: the image scaled so its long side is at most ``mimic_side`` (a fine-tuner trains at about
that resolution, so finer detail never reaches it), then a centred crop of at most ``crop``² pixels,
both images on the 8-bit grid. Randomness (the noise) comes from ``seed`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import metrics
from .evaluation import matched_noise
from .images import fit_within, resize_image

# LPIPS-alex bands and their words. Reference points (docs/EVALUATION.md, python -m benchmarks.noise_control):
# random ±4/255 sign noise measures 0.037 and ±8/255 0.131 on 16 held-out images at 256².
VISIBILITY_SCALE: tuple[tuple[float, str], ...] = (
    (0.03, "hard to see"),
    (0.06, "faint: like fine film grain"),
    (0.12, "visible up close, especially on flat areas such as skies and skin"),
    (float("inf"), "clearly visible"),
)
# Below this, one image's noise damage is within the crop-to-crop spread of the measure and no ratio is given
# (higher than the benchmarks' bar for a mean over many images, noise_control.MIN_MEAN_NOISE_DAMAGE).
MIN_NOISE_DAMAGE = 0.005
# Below this damage the protection barely changes what a mimic sees, whatever noise does: said in so many words.
# The default generator's mean damage is 0.033 on 47 held-out images (docs/EVALUATION.md), random ±4/255 noise's
# 0.020; on flat-colour cartoons its texture budget alone leaves 0.0001–0.0007 (nothing to hide a perturbation in),
# its minimum energy (on by default) 0.023–0.034 at 256² — but less on a saturated centre crop (0.003 on cartoon_050).
WEAK_DAMAGE = 0.005
# What a weak verdict adds: where to go next, or, once the minimum energy is on, that this is about as far as it goes.
UNLIFTED_WEAK = ("This happens most on images with large flat areas, where the texture budget keeps the perturbation small to "
                 "stay unseen, and a higher strength changes little there. 'Lift flat images' (under Advanced, on by default "
                 "with the generator; --min-energy 2.5 on the command line) gives such images a minimum of protection, "
                 "written blue-yellow only, with a faint colour pattern on the flat areas.")
LIFTED_WEAK = ("Flat images are already lifted here: large flat areas and saturated or white fills leave little that a "
               "change of colour can use without being seen, and a higher strength changes little there.")
STRENGTH_SCALE: tuple[tuple[float, str], ...] = (
    (1.2, "no stronger than random noise of the same energy"),
    (2.0, "stronger than random noise of the same energy"),
    (float("inf"), "much stronger than random noise of the same energy"),
)


@dataclass(frozen=True)
class Verdict:
    lpips: float | None  # LPIPS-alex(protected, clean) on the copy
    psnr_db: float
    damage: float | None  # mimic damage of the protection (see module docstring)
    noise_damage: float | None  # the same for random noise of equal energy
    ratio: float | None  # damage / noise_damage; None when either is not measurable
    sentence: str

    def as_dict(self) -> dict:
        return {"lpips": self.lpips, "psnr_db": self.psnr_db, "damage": self.damage,
                "noise_damage": self.noise_damage, "ratio": self.ratio, "sentence": self.sentence}


def words(value: float, scale: tuple[tuple[float, str], ...]) -> str:
    """The words of the first band whose upper bound exceeds ``value``."""
    return next(text for bound, text in scale if value < bound)


def mimic_copy(image: torch.Tensor, *, mimic_side: int = 1024, crop: int = 256) -> torch.Tensor:
    """1×3×H×W [0, 1] (or its uint8 levels) -> the copy the verdict is measured on (module docstring), on the 8-bit grid."""
    height, width = fit_within(*image.shape[-2:], mimic_side, min_side=8)
    # levels are resized band by band (no full-size float copy: 280 MB at 24 MP), to the float pixels' values
    scaled = (resize_image(image if image.dtype == torch.uint8 else image.float(), height, width).clamp(0, 1) * 255).round() / 255
    top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    return scaled[..., top : top + crop, left : left + crop]


@dataclass(frozen=True)
class CleanReference:
    """What the verdict needs of the clean image alone: how far the autoencoder's view of its copy lands from
    it, and the copy itself (to check that a reference is this image's). It does not depend on the settings, so
    a page computes it once per upload, while the visitor chooses them (:func:`clean_reference`), and a click
    pays two round trips instead of three."""

    copy: torch.Tensor  # the clean image's copy (:func:`mimic_copy`): 256×256 at most
    baseline: float  # LPIPS(round trip of copy, copy)


@torch.no_grad()
def clean_reference(protector, clean: torch.Tensor, *, mimic_side: int = 1024, crop: int = 256) -> CleanReference | None:
    """The :class:`CleanReference` of ``clean`` (1×3×H×W, [0, 1] or levels) with ``protector``'s autoencoder and
    LPIPS; None when the verdict would not measure damage (no LPIPS, no decoder, or a copy under 32 px)."""
    x = mimic_copy(clean.to(protector.device), mimic_side=mimic_side, crop=crop)
    if protector.perceptual is None or protector.autoencoder.decoder is None or min(x.shape[-2:]) < 32:
        return None
    return CleanReference(x, _baseline(protector, x))


def _baseline(protector, x: torch.Tensor) -> float:
    """LPIPS between the autoencoder's view of the clean copy ``x`` and ``x``: what the damages are measured from."""
    return float(protector.perceptual(protector.autoencoder.round_trip(x).float(), x)[0])


@torch.no_grad()
def quick_verdict(protector, clean: torch.Tensor, protected: torch.Tensor, *, seed: int = 0,
                  mimic_side: int = 1024, crop: int = 256, lifted: bool = False,
                  reference: CleanReference | None = None) -> Verdict:
    """The verdict on ``protected`` (1×3×H×W, [0, 1] or levels) against ``clean``, with ``protector``'s
    autoencoder and LPIPS. Without a decoder or LPIPS the missing parts are None and the sentence says so.
    ``lifted``: the protection already ran with the minimum energy, so a weak result does not point to it again.
    ``reference``: the clean half, computed before (:func:`clean_reference`); used only when its copy is this
    clean image's, pixel for pixel, so a stale or foreign reference can cost time but never change a number."""
    device = protector.device
    x = mimic_copy(clean.to(device), mimic_side=mimic_side, crop=crop)
    x_hat = mimic_copy(protected.to(device), mimic_side=mimic_side, crop=crop)
    psnr = metrics.psnr(x_hat, x)
    perceptual, autoencoder = protector.perceptual, protector.autoencoder
    if perceptual is None or min(x.shape[-2:]) < 32:
        return Verdict(None, psnr, None, None, None, f"PSNR {psnr:.1f} dB; visibility and strength need LPIPS, which is not loaded.")
    lpips = float(perceptual(x_hat, x)[0])
    visible = f"{words(lpips, VISIBILITY_SCALE).capitalize()} (LPIPS {lpips:.3f}, PSNR {psnr:.1f} dB)"
    if autoencoder.decoder is None:
        return Verdict(lpips, psnr, None, None, None, f"{visible}; strength not measured (no decoder loaded).")
    noise = matched_noise(x, x_hat, torch.Generator().manual_seed(seed)).to(device)
    # One round trip per copy, not a batch: on a 2-core CPU a batch of three TAEF2 round trips at 256² took 2.14 s and
    # three single ones 1.71 s, and a copy's view then never depends on what else was in its batch.
    seen_protected, seen_noise = autoencoder.round_trip(x_hat).float(), autoencoder.round_trip(noise).float()
    if reference is not None and reference.copy.shape == x.shape and torch.equal(reference.copy.to(device), x):
        baseline = reference.baseline
    else:
        baseline = _baseline(protector, x)
    damage = float(perceptual(seen_protected, x)[0]) - baseline
    noise_damage = float(perceptual(seen_noise, x)[0]) - baseline
    ratio = damage / noise_damage if noise_damage >= MIN_NOISE_DAMAGE else None
    if damage < WEAK_DAMAGE:  # a ratio would flatter a protection that does next to nothing
        return Verdict(lpips, psnr, damage, noise_damage, ratio,
                       f"{visible}; weak on this image: it barely changes what a mimic sees (damage {max(damage, 0):.3f}). "
                       + (LIFTED_WEAK if lifted else UNLIFTED_WEAK))
    if noise_damage < MIN_NOISE_DAMAGE:  # a ratio to almost nothing would only measure the noise's luck
        return Verdict(lpips, psnr, damage, noise_damage, None,
                       f"{visible}; damage to what a mimic sees {damage:.3f}, where random noise of the same energy does almost none ({max(noise_damage, 0):.3f}).")
    return Verdict(lpips, psnr, damage, noise_damage, ratio,
                   f"{visible}; {words(ratio, STRENGTH_SCALE)} ({ratio:.1f}× its damage to what a mimic sees).")
