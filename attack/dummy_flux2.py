"""A tiny, random-weight FLUX.2 [klein] stack built from configs: no download, CPU-fast.

It has klein's *shape of computation* — an ``AutoencoderKLFlux2`` whose latent is patchified 2×2
and batch-norm normalised, a Qwen3 causal LM whose hidden states from three layers are stacked as
the prompt embedding, a ``Flux2Transformer2DModel`` (double-stream and single-stream blocks,
4-axis RoPE ids, no guidance embedding), a flow-matching Euler scheduler with resolution-dependent
shift — at about 200 thousand parameters, so sampling, reference editing, LoRA training and
save/reload run in about a second on a CPU. Its weights are random: results prove that the code
runs and is deterministic, never that protection works.

Two differences from the real models, both deliberate: the VAE downsamples 4× (real: 8×) so
64-pixel images (the pipeline's minimum for reference images) stay cheap, and the tokenizer is
byte-level without merges (one token per byte) with a short maximum length.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from tokenizers import pre_tokenizers
from transformers import Qwen2TokenizerFast, Qwen3Config, Qwen3ForCausalLM

TEXT_WIDTH = 16  # Qwen3 hidden size; the transformer sees 3 stacked layers, so 48 channels
TEXT_LAYERS = 3  # the pipeline stacks hidden states (1, 2, 3) for an encoder this shallow
MAX_TOKENS = 96  # the chat-templated prompt "a photo of sks object" is 46 byte tokens
LATENT_CHANNELS = 8  # real FLUX.2 VAE: 32
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")

# Qwen3's chat layout, reduced to what ``Flux2KleinPipeline`` asks of it: one user turn, the
# assistant header, and the empty thinking block Qwen3 writes when thinking is switched off.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def build_tiny_qwen_tokenizer(max_length: int = MAX_TOKENS) -> Qwen2TokenizerFast:
    """A byte-level Qwen2 tokenizer with no merges, built in memory: every byte is one token.

    Vocabulary: the 256 byte-level symbols, then Qwen's special tokens (``<|endoftext|>`` is also
    the padding token, as in Qwen3), 261 entries. ``max_length`` is its ``model_max_length``,
    which :func:`attack.flux2.text_options` uses as the padded prompt length (real klein: 512).
    """
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet()) + list(SPECIAL_TOKENS)
    tokenizer = Qwen2TokenizerFast(
        vocab={symbol: index for index, symbol in enumerate(symbols)}, merges=[], model_max_length=max_length
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_flux2_transformer() -> Flux2Transformer2DModel:
    """One double-stream and two single-stream blocks, 2 heads of 16 (uses the global RNG)."""
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,  # the 2×2-patchified latent
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_LAYERS * TEXT_WIDTH,
        timestep_guidance_channels=32,
        mlp_ratio=2.0,
        axes_dims_rope=(4, 4, 4, 4),  # sums to the head dim, one part per (t, h, w, l) id axis
        guidance_embeds=False,  # klein has no guidance embedding (guidance is CFG or distilled away)
    )


def tiny_flux2_vae() -> AutoencoderKLFlux2:
    """Three encoder stages (4× downscale), 8 latent channels, batch-norm stats at their
    defaults (mean 0, var 1) so the normalisation is the identity (uses the global RNG)."""
    return AutoencoderKLFlux2(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 16),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=64,
    )


def tiny_qwen3(vocab_size: int, pad_token_id: int) -> Qwen3ForCausalLM:
    """A three-layer Qwen3 of width 16 (uses the global RNG)."""
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH,
        intermediate_size=32,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=MAX_TOKENS,
        pad_token_id=pad_token_id,
    )
    return Qwen3ForCausalLM(config)


def flux2_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Flow-matching Euler with resolution-dependent ("dynamic") shift, as FLUX pipelines use;
    the pipeline computes the shift ``mu`` from the image token count and the step count."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)


def build_tiny_flux2_pipelines(seed: int = 0) -> tuple[Flux2KleinPipeline, Flux2KleinPipeline]:
    """The tiny (base, distilled) pair: float32, CPU, eval mode, identical for the same ``seed``.

    Like the real family, the two share VAE, text encoder and tokenizer and differ in their
    transformer (same architecture, different weights; the "distilled" one is flagged
    ``is_distilled``, so the pipeline skips classifier-free guidance). The LoRA trains on the
    first and its saved files load into the second. Images: sides multiples of 8; reference
    images need both sides ≥ 64 (a ``Flux2KleinPipeline`` rule).
    """
    tokenizer = build_tiny_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):  # don't disturb the caller's global RNG
        torch.manual_seed(seed)
        base_transformer = tiny_flux2_transformer()
        distilled_transformer = tiny_flux2_transformer()
        vae = tiny_flux2_vae()
        text_encoder = tiny_qwen3(len(tokenizer), tokenizer.pad_token_id)
    shared = {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}
    base = Flux2KleinPipeline(scheduler=flux2_scheduler(), transformer=base_transformer, is_distilled=False, **shared)
    distilled = Flux2KleinPipeline(scheduler=flux2_scheduler(), transformer=distilled_transformer, is_distilled=True, **shared)
    for pipe in (base, distilled):
        pipe.set_progress_bar_config(disable=True)
    for module in (base_transformer, distilled_transformer, vae, text_encoder):
        module.eval()
    return base, distilled
