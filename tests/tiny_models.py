"""Tiny random models for fast CPU tests (the way diffusers' own tests build them from configs)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from fastprotect.encoders import Autoencoder, SDVAEDecoder, SDVAEEncoder
from fastprotect.mixture import MixtureConfig, MixtureOfPerturbations
from fastprotect.protect import Protector


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=4, sample_size=32,
    ).eval()


def tiny_autoencoder(seed: int = 0) -> Autoencoder:
    vae = tiny_vae(seed)
    return Autoencoder(encoder=SDVAEEncoder.from_vae(vae), decoder=SDVAEDecoder.from_vae(vae), kind="sd-vae", source="tiny")


def tiny_mixture(size: int = 32, seed: int = 0) -> MixtureOfPerturbations:
    """A random mixture whose perturbations sit at their ±eta/2 bounds (the strongest allowed)."""
    generator = torch.Generator().manual_seed(seed)
    mixture = MixtureOfPerturbations(MixtureConfig(size=size, latent_channels=4, assign_size=32, encoder_kind="sd-vae", encoder_source="tiny"))
    with torch.no_grad():
        half = mixture.config.eta / 2
        mixture.global_perturbations.copy_(torch.randint(0, 2, mixture.global_perturbations.shape, generator=generator) * 2 * half - half)
        mixture.group_perturbations.copy_(torch.randint(0, 2, mixture.group_perturbations.shape, generator=generator) * 2 * half - half)
        mixture.centroids.normal_(generator=generator)
        mixture.target_signatures.uniform_(generator=generator)
    return mixture


def tiny_protector(*, with_mixture: bool = True, perceptual=None, **options) -> Protector:
    return Protector(tiny_autoencoder(), mixture=tiny_mixture() if with_mixture else None, perceptual=perceptual, map_size=64, **options)
