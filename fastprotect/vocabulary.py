"""The words every part of FastProtect shares, each defined once.

The library, the three command lines (``fastprotect``, ``train``, ``attack``), the benchmarks and
the Space import these names instead of re-typing them, so a bound or a choice changes in one place.

Units of the budget η: the library works in image units (``eta`` in [0, 1], 8/255 by default, the
paper's notation); every user-facing surface (flags, sliders, reports) speaks 8-bit *levels*
(``eta_levels``, 8 by default). :func:`eta_from_levels` and :func:`levels_from_eta` are the only
conversions, and :func:`check_eta` the only validation.
"""

from __future__ import annotations

from typing import Literal, get_args

# ------------------------------------------------------------------------------------ budget η
DEFAULT_ETA_LEVELS = 8  # the paper's default budget, 8/255
# Above 32/255 a perturbation is plainly visible on any image; the bound keeps the UI, the API and
# the library honest about what "protection" means here.
MAX_ETA_LEVELS = 32
DEFAULT_ETA = DEFAULT_ETA_LEVELS / 255
MAX_ETA = MAX_ETA_LEVELS / 255


def check_eta(eta: float) -> float:
    """Validate a budget in image units: 0 < eta ≤ MAX_ETA. Returns it; raises ``ValueError``."""
    if not 0 < eta <= MAX_ETA + 1e-9:
        raise ValueError(f"the budget η must be between 1 and {MAX_ETA_LEVELS} levels (of 255); got {eta * 255:g}")
    return float(eta)


def eta_from_levels(levels: float) -> float:
    """8-bit levels (1…MAX_ETA_LEVELS) -> image units, validated."""
    if not 1 <= levels <= MAX_ETA_LEVELS:
        raise ValueError(f"the budget η must be between 1 and {MAX_ETA_LEVELS} levels (of 255); got {levels:g}")
    return check_eta(levels / 255)


def levels_from_eta(eta: float) -> int:
    """The budget in whole 8-bit levels: the largest integer change per channel within ``eta``."""
    return int(eta * 255 + 1e-6)


# ------------------------------------------------------------------------------ refine steps
# PGD steps after the one-shot step (paper Fig. 7c). Each costs about one encoder forward+backward
# at the working size (~0.5 s at 512² on 2 CPU cores): 50 keeps a request under a minute.
MAX_REFINE_STEPS = 50


def check_refine_steps(steps: int) -> int:
    """Validate a refine-step count: an integer in 0…MAX_REFINE_STEPS. Returns it; raises ``ValueError``."""
    if int(steps) != steps or not 0 <= steps <= MAX_REFINE_STEPS:
        raise ValueError(f"refine steps must be a whole number between 0 and {MAX_REFINE_STEPS}; got {steps}")
    return int(steps)


def check_min_energy(levels: float) -> float:
    """Validate a minimum energy (the generator's ``fill_rms_levels``, RMS in 8-bit levels at η 8): a
    number ≥ 0, 0 = off. Returns it as a float; raises ``ValueError``. The upper bound is the checkpoint's own
    energy cap, which only the loaded generator knows (``GeneratorConfig``)."""
    if isinstance(levels, bool) or not isinstance(levels, (int, float)) or not levels >= 0:  # not >=: NaN fails too
        raise ValueError(f"min_energy must be a number of levels, at least 0 (0 = off); got {levels!r}")
    return float(levels)


# ----------------------------------------------------------------------------- target patterns
TargetName = Literal["low", "mid", "high"]
TARGET_NAMES: tuple[TargetName, ...] = get_args(TargetName)
TargetChoice = Literal["auto", "low", "mid", "high"]
TARGET_CHOICES: tuple[TargetChoice, ...] = get_args(TargetChoice)


def check_target(target: str) -> TargetChoice:
    """Validate a target choice ("auto" or a pattern name). Returns it; raises ``ValueError``."""
    if target not in TARGET_CHOICES:
        raise ValueError(f"target must be one of {', '.join(TARGET_CHOICES)}; got {target!r}")
    return target  # type: ignore[return-value]


# -------------------------------------------------------------------------------- encoders
# sd-vae: Stable Diffusion's AutoencoderKL (diffusers); taesd / taef2: the tiny distilled
# autoencoders of SD-1.5 and FLUX.2 (fastprotect.taesd).
AutoencoderKind = Literal["sd-vae", "taesd", "taef2"]
AUTOENCODER_KINDS: tuple[AutoencoderKind, ...] = get_args(AutoencoderKind)
# How the page and the docs name each encoder: what it is, never a family it only imitates.
AUTOENCODER_DISPLAY_NAMES: dict[AutoencoderKind, str] = {
    "sd-vae": "the Stable Diffusion 1.5 VAE",
    "taesd": "TAESD (a tiny distilled copy of the Stable Diffusion 1.5 VAE)",
    "taef2": "TAEF2 (a tiny distilled copy of the FLUX.2 VAE)",
}

# ----------------------------------------------------------------------------- mimic families
# The diffusion-model family whose mimicry a checkpoint protects against (its ``mimic_base``), and
# so the family the Space's proof attacks with: the family whose VAE the encoder is, or imitates.
MimicFamily = Literal["sd-1.5", "flux.2-klein"]
MIMIC_FAMILIES: tuple[MimicFamily, ...] = get_args(MimicFamily)
MIMIC_FAMILY_OF_ENCODER: dict[AutoencoderKind, MimicFamily] = {"sd-vae": "sd-1.5", "taesd": "sd-1.5", "taef2": "flux.2-klein"}
MIMIC_DISPLAY_NAMES: dict[MimicFamily, str] = {"sd-1.5": "Stable Diffusion 1.5", "flux.2-klein": "FLUX.2 [klein] 4B"}

# ------------------------------------------------------------------------------------ files
# What a folder scan picks up as an image (files named explicitly are always tried, so a bad one
# is reported rather than silently skipped). Output is always PNG.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif"})


def is_image_name(name: str) -> bool:
    """True when a file name has one of IMAGE_SUFFIXES (case-insensitive)."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_SUFFIXES
