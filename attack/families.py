"""The mimic families the attacks run: which diffusion models a mimic fine-tunes and samples.

The family names themselves are ``fastprotect.vocabulary.MimicFamily``. A protection checkpoint records the family it protects
against (the encoder it was trained through belongs to that family's VAE), and the attacks that
prove it must run on that family. This module imports nothing heavy (no torch, no diffusers), so
the library and checkpoint configs can read it cheaply.

* ``"sd-1.5"``: Stable Diffusion 1.5 (4-channel ``AutoencoderKL`` latent, UNet); one model both
  fine-tuned and sampled.
* ``"flux.2-klein"``: FLUX.2 [klein] 4B (32-channel ``AutoencoderKLFlux2`` latent, the VAE that
  TAEF2 distils; flow-matching transformer; Qwen3 text encoder). The LoRA trains on the undistilled
  *base* model; samples and edits come from the step-distilled model (4 steps, no guidance), whose
  transformer has the same architecture and so loads the same LoRA files. How well a LoRA trained
  on the base transfers to the distilled weights has not been measured here.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastprotect.vocabulary import MIMIC_FAMILIES as FAMILIES
from fastprotect.vocabulary import MimicFamily

# The attack CLI's default when no checkpoint decides; the Space follows its checkpoint's mimic_base.
DEFAULT_FAMILY: MimicFamily = "sd-1.5"


@dataclass(frozen=True)
class FamilySpec:
    """Hub ids and facts of one family. ``train_id``: the model a mimic fine-tunes (LoRA);
    ``sample_id``: the model it samples and edits with (the same id for SD-1.5)."""

    name: MimicFamily
    train_id: str
    sample_id: str
    licence: str
    latent_channels: int  # of the VAE an encoder-targeting protection must fool
    autoencoder: str  # the ``--autoencoder`` name of that VAE in ``python -m attack roundtrip``


SPECS: dict[MimicFamily, FamilySpec] = {
    "sd-1.5": FamilySpec(
        name="sd-1.5",
        train_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        sample_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        licence="CreativeML OpenRAIL-M",
        latent_channels=4,
        autoencoder="sd-vae",
    ),
    "flux.2-klein": FamilySpec(
        name="flux.2-klein",
        train_id="black-forest-labs/FLUX.2-klein-base-4B",
        sample_id="black-forest-labs/FLUX.2-klein-4B",
        licence="Apache-2.0",
        latent_channels=32,
        autoencoder="flux2-vae",
    ),
}


def family_spec(family: str) -> FamilySpec:
    """The spec of ``family``; a ValueError listing the known names for anything else."""
    if family not in SPECS:
        raise ValueError(f"unknown mimic family {family!r}; known: {', '.join(FAMILIES)}")
    return SPECS[family]  # type: ignore[index]


def mimic_base(family: str) -> str:
    """The Hub id a checkpoint's ``mimic_base`` field records: the model the mimic fine-tunes."""
    return family_spec(family).train_id
