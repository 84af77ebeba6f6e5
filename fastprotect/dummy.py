"""Dummy models: random weights, real architectures, built from configs in memory. One factory.

Tests, benchmarks and the dummy Space (``tests/launch_dummy_app.py``) build every random model
here, the way diffusers' tests build theirs from ``get_dummy_components``: no download, CPU,
seconds, identical for the same ``seed`` (built under ``torch.random.fork_rng``, so the caller's
global RNG is left alone). Their outputs prove that the code runs, never that protection works.

"Dummy" means random weights. "Tiny" means the real TAESD family of tiny autoencoders
(:mod:`fastprotect.taesd`); :func:`dummy_autoencoder` builds those too, with random weights.

Sections: autoencoders · mixture · generator · perceptual · protector · the SD-1.5 attack stack · FLUX.2 [klein]
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
    from diffusers import (
        AutoencoderKL, AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel,
        PNDMScheduler, StableDiffusionPipeline,
    )
    from transformers import CLIPTokenizer, Qwen2TokenizerFast, Qwen3ForCausalLM

    from .encoders import Autoencoder
    from .generator import PerturbationGenerator
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


# ================================================================================== generator
def dummy_generator(*, width: int = 8, blocks: int = 1, encoder_kind: AutoencoderKind = "sd-vae", seed: int = 0,
                    **config: Any) -> PerturbationGenerator:
    """A random perturbation generator (eval mode): a narrow net whose last layer is scaled up so that
    its raw pattern sits near ±1, the strongest the budget allows. ``config``: GeneratorConfig fields."""
    from .generator import GeneratorConfig, PerturbationGenerator

    settings = GeneratorConfig(width=width, blocks=blocks, encoder_kind=encoder_kind, encoder_source=DUMMY_SOURCE, **config)
    with _seeded(seed):
        model = PerturbationGenerator(settings)
    with torch.no_grad():
        model.net.head.weight.mul_(50)
    return model.eval()


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


def dummy_protector(*, with_mixture: bool = True, with_generator: bool = False, perceptual: torch.nn.Module | None = None,
                    seed: int = 0, **options: Any) -> Protector:
    """A :class:`fastprotect.protect.Protector` on :func:`dummy_autoencoder` (small SD-VAE) with
    :func:`dummy_generator` when ``with_generator``, else :func:`dummy_mixture` unless ``with_mixture``
    is False (per-image mode). ``options`` go to Protector (``map_size`` defaults to 64)."""
    from .protect import Protector

    generator = dummy_generator(seed=seed) if with_generator else None
    mixture = dummy_mixture(seed=seed) if with_mixture and generator is None else None
    return Protector(dummy_autoencoder(seed=seed), mixture=mixture, generator=generator, perceptual=perceptual,
                     **{"map_size": 64, **options})


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


# ===================================================================== FLUX.2 [klein]
# klein's *shape of computation* at about 200 thousand parameters: an AutoencoderKLFlux2 whose latent
# is patchified 2×2 and batch-norm normalised, a Qwen3 causal LM whose hidden states from three
# layers are stacked as the prompt embedding, a Flux2Transformer2DModel (double- and single-stream
# blocks, 4-axis RoPE ids, no guidance embedding), a flow-matching Euler scheduler with
# resolution-dependent shift. Sampling, reference editing, LoRA training and save/reload run in
# about a second on a CPU; the weights are random, so results prove the code runs, never that
# protection works. Two deliberate differences from the real models: the VAE downsamples 4× (real:
# 8×) so 64-pixel images (the pipeline's minimum for reference images) stay cheap, and the tokenizer
# is byte-level without merges (one token per byte) with a short maximum length.

FLUX2_TEXT_WIDTH = 16  # Qwen3 hidden size; the transformer sees 3 stacked layers, so 48 channels
FLUX2_TEXT_LAYERS = 3  # the pipeline stacks hidden states (1, 2, 3) for an encoder this shallow
FLUX2_MAX_TOKENS = 96  # the chat-templated prompt "a photo of sks object" is 46 byte tokens
FLUX2_LATENT_CHANNELS = 8  # real FLUX.2 VAE: 32
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")

# Qwen3's chat layout, reduced to what ``Flux2KleinPipeline`` asks of it: one user turn, the
# assistant header, and the empty thinking block Qwen3 writes when thinking is switched off.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def dummy_qwen_tokenizer(max_length: int = FLUX2_MAX_TOKENS) -> Qwen2TokenizerFast:
    """A byte-level Qwen2 tokenizer with no merges, built in memory: every byte is one token.

    Vocabulary: the 256 byte-level symbols, then Qwen's special tokens (``<|endoftext|>`` is also
    the padding token, as in Qwen3), 261 entries. ``max_length`` is its ``model_max_length``,
    which :func:`attack.flux2.text_options` uses as the padded prompt length (real klein: 512).
    """
    from tokenizers import pre_tokenizers
    from transformers import Qwen2TokenizerFast

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet()) + list(QWEN_SPECIAL_TOKENS)
    tokenizer = Qwen2TokenizerFast(
        vocab={symbol: index for index, symbol in enumerate(symbols)}, merges=[], model_max_length=max_length
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def dummy_flux2_transformer() -> Flux2Transformer2DModel:
    """One double-stream and two single-stream blocks, 2 heads of 16 (uses the global RNG)."""
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * FLUX2_LATENT_CHANNELS,  # the 2×2-patchified latent
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=FLUX2_TEXT_LAYERS * FLUX2_TEXT_WIDTH,
        timestep_guidance_channels=32,
        mlp_ratio=2.0,
        axes_dims_rope=(4, 4, 4, 4),  # sums to the head dim, one part per (t, h, w, l) id axis
        guidance_embeds=False,  # klein has no guidance embedding (guidance is CFG or distilled away)
    )


def dummy_flux2_vae() -> AutoencoderKLFlux2:
    """Three encoder stages (4× downscale), 8 latent channels, batch-norm stats at their
    defaults (mean 0, var 1) so the normalisation is the identity (uses the global RNG)."""
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 16),
        layers_per_block=1,
        latent_channels=FLUX2_LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=64,
    )


def dummy_qwen3(vocab_size: int, pad_token_id: int) -> Qwen3ForCausalLM:
    """A three-layer Qwen3 of width 16 (uses the global RNG)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=FLUX2_TEXT_WIDTH,
        intermediate_size=32,
        num_hidden_layers=FLUX2_TEXT_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=FLUX2_MAX_TOKENS,
        pad_token_id=pad_token_id,
    )
    return Qwen3ForCausalLM(config)


def flux2_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Flow-matching Euler with resolution-dependent ("dynamic") shift, as FLUX pipelines use;
    the pipeline computes the shift ``mu`` from the image token count and the step count."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)


def dummy_flux2_pipelines(seed: int = 0) -> tuple[Flux2KleinPipeline, Flux2KleinPipeline]:
    """The dummy (base, distilled) pair: float32, CPU, eval mode, identical for the same ``seed``.

    Like the real family, the two share VAE, text encoder and tokenizer and differ in their
    transformer (same architecture, different weights; the "distilled" one is flagged
    ``is_distilled``, so the pipeline skips classifier-free guidance). The LoRA trains on the
    first and its saved files load into the second. Images: sides multiples of 8; reference
    images need both sides ≥ 64 (a ``Flux2KleinPipeline`` rule).
    """
    from diffusers import Flux2KleinPipeline

    tokenizer = dummy_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):  # don't disturb the caller's global RNG
        torch.manual_seed(seed)
        base_transformer = dummy_flux2_transformer()
        distilled_transformer = dummy_flux2_transformer()
        vae = dummy_flux2_vae()
        text_encoder = dummy_qwen3(len(tokenizer), tokenizer.pad_token_id)
    shared = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}
    base = Flux2KleinPipeline(scheduler=flux2_scheduler(), transformer=base_transformer, is_distilled=False, **shared)
    distilled = Flux2KleinPipeline(scheduler=flux2_scheduler(), transformer=distilled_transformer, is_distilled=True, **shared)
    for pipe in (base, distilled):
        pipe.set_progress_bar_config(disable=True)
    for module in (base_transformer, distilled_transformer, vae, text_encoder):
        module.eval()
    return base, distilled
