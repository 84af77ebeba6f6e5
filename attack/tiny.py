"""A tiny, random-weight Stable Diffusion stack built from configs: no download, CPU-fast.

It has SD-1.5's *shape of computation* (8× VAE downscale, 4 latent channels, a cross-attention
UNet conditioned on CLIP text states, a DDPM-trained epsilon model sampled with PNDM) at about
350 thousand parameters (SD-1.5: 1.07 billion), so every attack's plumbing (LoRA injection, the noise-prediction loss,
save/reload, img2img, sampling) runs in seconds on a CPU. Its weights are random: results on it
prove that the code runs and is deterministic, never that protection works.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TEXT_WIDTH = 32  # CLIP hidden size == UNet cross-attention dim
MAX_TOKENS = 32  # one token per character here: room for "a photo of sks object" and more
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def build_tiny_tokenizer(max_length: int = MAX_TOKENS) -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every character is one token.

    The vocabulary is the 256 byte-level symbols, each also with CLIP's end-of-word suffix, plus
    the two special tokens (ids 512, 513): 514 entries, built in memory, nothing read from disk.
    ``max_length``: the padded prompt length (SD-1.5 uses 77).
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    symbols = alphabet + [symbol + "</w>" for symbol in alphabet] + [BOS, EOS]
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def sd15_scheduler() -> PNDMScheduler:
    """SD-1.5's sampling scheduler (PNDM, scaled-linear betas); LoRA training reads the same betas
    through ``DDPMScheduler.from_config``."""
    return PNDMScheduler.from_config(
        DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").config,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """A random-weight SD-style pipeline (float32, CPU, eval mode), identical for the same ``seed``.

    Images: any H×W multiple of 8 (VAE 8×; the UNet downsamples the latent once more, which
    diffusers handles at odd latent sizes too); 32×32 or 64×64 keeps a step well under 0.1 s.
    """
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):  # don't disturb the caller's global RNG
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32),
            layers_per_block=1,
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_WIDTH,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        # Four encoder stages like SD's VAE, so the latent is H/8 × W/8 with 4 channels.
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 16, 16),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=4,
            sample_size=64,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=TEXT_WIDTH,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                max_position_embeddings=MAX_TOKENS,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sd15_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for module in (unet, vae, text_encoder):
        module.eval()
    return pipe

