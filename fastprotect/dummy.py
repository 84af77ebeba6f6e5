"""Dummy models: random weights, real architectures, built from configs in memory. One factory.

Tests, benchmarks and the dummy Space (``tests/launch_dummy_app.py``) build every random model
here, the way diffusers' tests build theirs from ``get_dummy_components``: no download, CPU,
seconds, identical for the same ``seed`` (built under ``torch.random.fork_rng``, so the caller's
global RNG is left alone). Their outputs prove that the code runs, never that protection works.

"Dummy" means random weights. "Tiny" means the real TAESD family of tiny autoencoders
(:mod:`fastprotect.taesd`); :func:`dummy_autoencoder` builds those too, with random weights.

Sections: autoencoders · mixture · perceptual · protector · the SD-1.5 attack stack · FLUX.2
[klein] (to come: add its dummy components in their own section, same conventions). Heavy
libraries (diffusers, transformers, lpips) are imported inside the functions that need them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from .vocabulary import AutoencoderKind

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from .encoders import Autoencoder
    from .mixture import MixtureOfPerturbations
    from .perceptual import PerceptualDistance
    from .protect import Protector

DUMMY_SOURCE = "dummy"  # the ``source`` every dummy model reports, and the encoder_source of a dummy mixture


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG for the block, then restore the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# =============================================================================== autoencoders
# A 2-block AutoencoderKL: downscale 2, 4 latent channels, a few thousand parameters.
SMALL_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (8, 16), "layers_per_block": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2,
    "norm_num_groups": 4, "sample_size": 32,
}
# The real SD-1.5 VAE architecture (84M parameters, downscale 8): its speed without its download.
SD15_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 32, "sample_size": 512, "act_fn": "silu",
}


def dummy_sd_vae(seed: int = 0, *, sd15_sized: bool = False) -> AutoencoderKL:
    """A random diffusers ``AutoencoderKL`` in eval mode: small (:data:`SMALL_VAE_CONFIG`), or with
    SD-1.5's architecture when ``sd15_sized`` (:data:`SD15_VAE_CONFIG`)."""
    from diffusers import AutoencoderKL

    config = SD15_VAE_CONFIG if sd15_sized else SMALL_VAE_CONFIG
    with _seeded(seed):
        return AutoencoderKL(**config).eval()


def dummy_autoencoder(kind: AutoencoderKind = "sd-vae", seed: int = 0, *, sd15_sized: bool = False,
                      with_decoder: bool = True) -> Autoencoder:
    """A frozen random :class:`fastprotect.encoders.Autoencoder` of ``kind``.

    ``"sd-vae"``: :func:`dummy_sd_vae` behind the SD-VAE wrappers. ``"taesd"`` / ``"taef2"``: the
    real TAESD-family layout (:mod:`fastprotect.taesd`) with random weights.
    """
    from .encoders import (
        Autoencoder,
        SDVAEDecoder,
        SDVAEEncoder,
        TinyDecoder,
        TinyEncoder,
    )

    if kind == "sd-vae":
        vae = dummy_sd_vae(seed, sd15_sized=sd15_sized)
        encoder, decoder = SDVAEEncoder.from_vae(vae), (SDVAEDecoder.from_vae(vae) if with_decoder else None)
    elif kind in ("taesd", "taef2"):
        if sd15_sized:
            raise ValueError("sd15_sized applies to kind 'sd-vae' only")
        with _seeded(seed):
            encoder, decoder = TinyEncoder(kind), (TinyDecoder(kind) if with_decoder else None)
    else:
        raise ValueError(f"unknown autoencoder kind {kind!r}")
    return Autoencoder(encoder=encoder, decoder=decoder, kind=kind, source=DUMMY_SOURCE)


# ==================================================================================== mixture
def dummy_mixture(*, latent_channels: int = 4, encoder_kind: AutoencoderKind = "sd-vae", size: int = 32,
                  assign_size: int = 32, num_groups: int | None = None, seed: int = 0) -> MixtureOfPerturbations:
    """A random mixture (eval mode) for an encoder with ``latent_channels``: every perturbation at
    its ±η/2 bound (the strongest allowed), random centroids and target signatures."""
    from .mixture import MixtureConfig, MixtureOfPerturbations

    options = {} if num_groups is None else {"num_groups": num_groups}
    config = MixtureConfig(size=size, assign_size=assign_size, latent_channels=latent_channels, encoder_kind=encoder_kind,
                           encoder_source=DUMMY_SOURCE, encoder_subfolder=None, **options)
    mixture = MixtureOfPerturbations(config)
    generator = torch.Generator().manual_seed(seed)
    half = config.eta / 2
    with torch.no_grad():
        for perturbation in (mixture.global_perturbations, mixture.group_perturbations):
            perturbation.copy_((torch.randint(0, 2, perturbation.shape, generator=generator) * 2 - 1) * half)
        mixture.centroids.normal_(generator=generator)
        mixture.target_signatures.uniform_(generator=generator)
    return mixture.eval()


# ================================================================================= perceptual
def dummy_perceptual(seed: int = 0) -> PerceptualDistance:
    """LPIPS v0.1 AlexNet with a random trunk and the real linear heads (they ship inside the
    ``lpips`` package, so nothing is downloaded)."""
    import warnings

    import lpips

    from .perceptual import PerceptualDistance

    with _seeded(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    return PerceptualDistance(model, "alex")


# ================================================================================== protector
# The dummy Space's Protector works at small sizes so that a request takes well under a second.
SPACE_PROTECTOR_OPTIONS: dict[str, Any] = {"assign_size": 32, "map_size": 64, "metrics_size": 128, "work_size": 64, "per_image_steps": 3}
SPACE_NOTE = "Dummy random models (tests): the output is not protected."


def dummy_protector(*, with_mixture: bool = True, perceptual: torch.nn.Module | None = None, seed: int = 0,
                    **options: Any) -> Protector:
    """A :class:`fastprotect.protect.Protector` on :func:`dummy_autoencoder` (small SD-VAE) and, unless
    ``with_mixture`` is False (per-image mode), :func:`dummy_mixture`. ``options`` go to Protector
    (``map_size`` defaults to 64)."""
    from .protect import Protector

    mixture = dummy_mixture(seed=seed) if with_mixture else None
    return Protector(dummy_autoencoder(seed=seed), mixture=mixture, perceptual=perceptual, **{"map_size": 64, **options})


def dummy_space_protector(*, per_image: bool = False, lpips_backbone: str | os.PathLike | None = None) -> Protector:
    """The dummy Space's Protector (:data:`SPACE_PROTECTOR_OPTIONS`); ``lpips_backbone``: a real
    LPIPS AlexNet file, for adaptive strength and the visibility map (optional)."""
    perceptual = None
    if lpips_backbone is not None:
        from .perceptual import load_perceptual

        perceptual = load_perceptual("alex", lpips_backbone)
    return dummy_protector(with_mixture=not per_image, perceptual=perceptual, notes=[SPACE_NOTE], **SPACE_PROTECTOR_OPTIONS)


# ================================================================== the SD-1.5 attack stack
# SD-1.5's *shape of computation* (8× VAE downscale, 4 latent channels, a cross-attention UNet on
# CLIP text states, a DDPM-trained epsilon model sampled with PNDM) at about 350 thousand
# parameters (SD-1.5: 1.07 billion), so every attack's plumbing (LoRA injection, the noise-
# prediction loss, save/reload, img2img, sampling) runs in seconds on a CPU; or, ``full_size``,
# SD-1.5's real architecture for timing.
TEXT_WIDTH = 32  # CLIP hidden size == UNet cross-attention dim of the small stack
MAX_TOKENS = 32  # one token per character here: room for "a photo of sks object" and more
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
ATTACK_VAE_CONFIG: dict[str, Any] = {  # four stages like SD's VAE: latent H/8 × W/8, 4 channels
    "block_out_channels": (8, 8, 16, 16), "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 4, "sample_size": 64,
}
ATTACK_UNET_CONFIG: dict[str, Any] = {
    "block_out_channels": (16, 32), "layers_per_block": 1, "sample_size": 8, "in_channels": 4, "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"), "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": TEXT_WIDTH, "attention_head_dim": 8, "norm_num_groups": 8,
}
SD15_UNET_CONFIG: dict[str, Any] = {  # 860M parameters
    "sample_size": 64, "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "layers_per_block": 2, "cross_attention_dim": 768, "attention_head_dim": 8,
}
SD15_TEXT_CONFIG: dict[str, Any] = {  # CLIP ViT-L/14's text encoder, 123M parameters
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
}


def dummy_clip_tokenizer(max_length: int = MAX_TOKENS) -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every character is one token.

    The vocabulary is the 256 byte-level symbols, each also with CLIP's end-of-word suffix, plus
    the two special tokens (ids 512, 513): 514 entries, built in memory, nothing read from disk.
    ``max_length``: the padded prompt length (SD-1.5 uses 77).
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols = alphabet + [symbol + "</w>" for symbol in alphabet] + [BOS, EOS]
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def sd15_scheduler() -> PNDMScheduler:
    """SD-1.5's sampling scheduler (PNDM, scaled-linear betas); LoRA training reads the same betas
    through ``DDPMScheduler.from_config``."""
    from diffusers import DDPMScheduler, PNDMScheduler

    return PNDMScheduler.from_config(
        DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").config,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def dummy_sd15_pipeline(seed: int = 0, *, full_size: bool = False) -> StableDiffusionPipeline:
    """A random-weight SD-style pipeline (float32, CPU, eval mode), identical for the same ``seed``.

    Small (default): images of any H×W multiple of 8 (VAE 8×; the UNet downsamples the latent once
    more, which diffusers handles at odd latent sizes too); 32×32 or 64×64 keeps a step well under
    0.1 s. ``full_size``: SD-1.5's architecture (UNet 860M, VAE 84M, CLIP text encoder 123M), with
    the byte-level tokenizer padded to 77 tokens; random weights cost what real ones do.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = dummy_clip_tokenizer(77 if full_size else MAX_TOKENS)
    with _seeded(seed):
        unet = UNet2DConditionModel(**(SD15_UNET_CONFIG if full_size else ATTACK_UNET_CONFIG))
        vae = AutoencoderKL(**(SD15_VAE_CONFIG if full_size else ATTACK_VAE_CONFIG))
        if full_size:
            text_config = CLIPTextConfig(**SD15_TEXT_CONFIG)
        else:
            text_config = CLIPTextConfig(
                vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=37, num_attention_heads=4,
                num_hidden_layers=2, max_position_embeddings=MAX_TOKENS, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            )
        text_encoder = CLIPTextModel(text_config)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sd15_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for module in (unet, vae, text_encoder):
        module.eval()
    return pipe


# ===================================================================== FLUX.2 [klein] (to come)
# Dummy FLUX.2 [klein] components (transformer, text encoder, its VAE) go here, built from small
# configs under _seeded(seed), with heavy imports inside the functions, like the sections above.
