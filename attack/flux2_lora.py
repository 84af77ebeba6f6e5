"""Quick DreamBooth-style LoRA on FLUX.2 [klein] and the clean-vs-protected duel.

The same mimic as :mod:`attack.lora`, for the FLUX.2 family: peft LoRA adapters on the
transformer's attention projections, trained with the rectified-flow loss that diffusers'
``train_dreambooth_lora_flux2_klein.py`` uses —

    x0     = batch-norm-normalised, 2×2-patchified VAE mean of the image   (B×4C×h×w)
    σ      = the training scheduler's sigma at a uniformly drawn timestep index
    x_σ    = (1 − σ)·x0 + σ·noise
    target = noise − x0,   loss = MSE(transformer(x_σ, σ, prompt), target)

— on the undistilled klein *base* pipeline; the adapter is saved in diffusers' LoRA format
(``Flux2KleinPipeline.save_lora_weights``) and loaded with ``load_lora_weights`` into the
*sampling* pipeline (the distilled klein), which draws the samples. Settings and results reuse
:class:`attack.lora.LoraSettings`, :class:`~attack.lora.SampleSettings`, :class:`~attack.lora.LoraRun`
and :class:`~attack.lora.DuelResult`, so callers treat both families alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from .flux2 import encode_latents, text_options
from .lora import (
    TRAINED_ADAPTER, DuelResult, autocast_dtype, LoraRun, LoraSettings, ProgressCallback, SampleSettings, generate_samples, run_adapter_training, run_duel, save_adapter,
)
from .pipeline import center_square, stack_images

# Attention projections of both block kinds, as the diffusers klein LoRA script targets by default:
# double-stream blocks' image-stream q/k/v/out, single-stream blocks' fused qkv+MLP input
# projection and their output projection ("attn.to_out" is a Linear there, a ModuleList in
# double-stream blocks, where only its ".0" Linear is a target).
FLUX2_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "to_qkv_mlp_proj", "attn.to_out")
FLUX2_LORA = LoraSettings(target_modules=FLUX2_TARGET_MODULES)
FLUX2_SAMPLING = SampleSettings(steps=4, guidance_scale=1.0)  # the distilled klein: 4 steps, no CFG


def _is_linear(module: torch.nn.Module) -> bool:
    """A Linear layer, or one that peft has already wrapped (a removed adapter leaves the wrapper)."""
    return isinstance(module, torch.nn.Linear) or isinstance(getattr(module, "base_layer", None), torch.nn.Linear)


def lora_target_names(transformer: torch.nn.Module, suffixes: Sequence[str]) -> list[str]:
    """Full names of the Linear layers whose name ends with one of ``suffixes`` (at a dot): the
    exact peft ``target_modules`` list (full names, so a suffix that also names a container
    elsewhere, like ``attn.to_out``, only picks the Linear layers)."""
    names = [
        name
        for name, module in transformer.named_modules()
        if _is_linear(module) and any(name == s or name.endswith("." + s) for s in suffixes)
    ]
    if not names:
        raise ValueError(f"no Linear layer of the transformer matches {list(suffixes)}")
    return names


@torch.no_grad()
def _training_latents(pipe: Flux2KleinPipeline, images: list[torch.Tensor], resolution: int) -> torch.Tensor:
    """N×4C×h×w float32: each image centre-cropped to ``resolution``², encoded once (the VAE is
    frozen and the script uses the posterior mean, so re-encoding would give the same)."""
    return torch.cat([encode_latents(pipe, center_square(image, resolution)) for image in images])


def _add_adapter(transformer: torch.nn.Module, settings: LoraSettings, adapter_name: str) -> tuple[LoraConfig, list[torch.nn.Parameter]]:
    """Attach a fresh LoRA (B = 0: the adapter starts as the identity), seeded; returns its config
    and its parameters as float32 master weights."""
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha or settings.rank,
        init_lora_weights="gaussian",
        target_modules=lora_target_names(transformer, settings.target_modules),
    )
    device = transformer.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)  # peft draws the A matrices from the global RNG
        transformer.add_adapter(config, adapter_name=adapter_name)
    trainable = [parameter for parameter in transformer.parameters() if parameter.requires_grad]
    for parameter in trainable:
        parameter.data = parameter.data.float()
    return config, trainable


def _flow_matching_loss(
    pipe: Flux2KleinPipeline,
    schedule: FlowMatchEulerDiscreteScheduler,
    clean: torch.Tensor,
    prompt: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator,
    autocast_dtype: torch.dtype | None,
) -> torch.Tensor:
    """One rectified-flow MSE on a batch of latents (b×4C×h×w): the loss, a scalar."""
    transformer, device, batch = pipe.transformer, clean.device, clean.shape[0]
    # All randomness is drawn on the CPU generator and moved, so runs repeat across devices.
    noise = torch.randn(clean.shape, generator=generator).to(device)
    index = torch.randint(0, len(schedule.timesteps), (batch,), generator=generator)
    sigma = schedule.sigmas[index].to(device).view(-1, 1, 1, 1)
    timestep = schedule.timesteps[index].to(device)
    noisy = (1 - sigma) * clean + sigma * noise
    embeds, text_ids = prompt
    # Packed tokens in the pipeline's layout, so the adapter learns what the sampler will ask of it.
    tokens = Flux2KleinPipeline._pack_latents(noisy)
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        prediction = transformer(
            hidden_states=tokens.to(transformer.dtype),
            timestep=(timestep / 1000).to(transformer.dtype),
            guidance=None,  # klein has no guidance embedding
            encoder_hidden_states=embeds.expand(batch, -1, -1),
            txt_ids=text_ids.expand(batch, -1, -1),
            img_ids=Flux2KleinPipeline._prepare_latent_ids(noisy).to(device),
            return_dict=False,
        )[0]
    target = Flux2KleinPipeline._pack_latents(noise - clean)
    return F.mse_loss(prediction[:, : tokens.shape[1]].float(), target.float())


def train_flux2_lora(
    pipe: Flux2KleinPipeline,
    images: torch.Tensor | list[torch.Tensor],
    settings: LoraSettings = FLUX2_LORA,
    *,
    progress: ProgressCallback | None = None,
    adapter_name: str = TRAINED_ADAPTER,
) -> LoraRun:
    """Fine-tune a fresh LoRA on ``pipe.transformer`` from ``images`` (B×3×H×W or a list of
    1×3×H×W, [0, 1], any sizes, centre-cropped to ``settings.resolution``²).

    Only the adapter trains (transformer, VAE and text encoder frozen, bit-identical afterwards);
    it stays attached under ``adapter_name`` (:func:`attack.lora.remove_lora` takes it off).
    Deterministic for a seed on a given device. ``progress(step, total, loss)`` after each step.
    ``settings.resolution`` must be a multiple of 2× the VAE's downscale (real: 16).
    """
    items = stack_images(images)
    transformer, device = pipe.transformer, pipe.transformer.device
    autocast = autocast_dtype(settings, transformer, device, fp16_safe=False)  # FLUX is not fp16-safe
    for module in (transformer, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    config, trainable = _add_adapter(transformer, settings, adapter_name)
    clean = _training_latents(pipe, items, settings.resolution).to(device)
    with torch.no_grad():
        prompt = pipe.encode_prompt(settings.instance_prompt, device=device, **text_options(pipe))
    schedule = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)  # training sigmas, unshifted by set_timesteps
    run = LoraRun(state_dict={}, metadata=config.to_dict(), settings=settings)

    def loss_of(batch: list[int], generator: torch.Generator) -> torch.Tensor:
        return _flow_matching_loss(pipe, schedule, clean[batch], prompt, generator, autocast)

    run.losses, run.seconds = run_adapter_training(transformer, trainable, settings, len(items), loss_of,
                                                   autocast_dtype=autocast, progress=progress)
    adapter_state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    run.state_dict = {key: value.detach().float().cpu().clone() for key, value in adapter_state.items()}
    return run


def save_flux2_lora(run: LoraRun, directory: str | Path) -> Path:
    """A FLUX.2 transformer adapter (:func:`attack.lora.save_adapter`: keys ``transformer.…lora_A/B.weight``)."""
    return save_adapter(run, directory, Flux2KleinPipeline, "transformer")


@torch.no_grad()
def generate_flux2_samples(pipe: Flux2KleinPipeline, settings: SampleSettings = FLUX2_SAMPLING, *, default_prompt: str = FLUX2_LORA.instance_prompt) -> torch.Tensor:
    """``settings.count`` images from the pipeline as it stands (with whatever adapter is loaded):
    count×3×res×res in [0, 1]; sample i uses seed ``settings.seed + i``."""
    return generate_samples(pipe, settings, default_prompt=default_prompt, **text_options(pipe))


def flux2_lora_duel(
    trainer: Flux2KleinPipeline,
    sampler: Flux2KleinPipeline,
    clean_images: torch.Tensor | list[torch.Tensor],
    protected_images: torch.Tensor | list[torch.Tensor],
    output_dir: str | Path,
    settings: LoraSettings = FLUX2_LORA,
    sampling: SampleSettings | None = None,
    *,
    progress: Callable[[str, int, int, float], None] | None = None,
) -> DuelResult:
    """Train a LoRA on the clean set and one on the protected set on ``trainer`` (identical
    settings and seeds), save both under ``output_dir/{clean,protected}/``, load each from disk
    into ``sampler`` and sample it with identical seeds. ``trainer`` may be ``sampler``.

    ``progress(name, step, total, loss)`` with name "clean" or "protected". ``sampling`` defaults
    to :data:`FLUX2_SAMPLING` at the training resolution with the instance prompt.
    """
    sampling = sampling or replace(FLUX2_SAMPLING, resolution=settings.resolution)
    sampling = replace(sampling, prompt=sampling.prompt or settings.instance_prompt)
    return run_duel(trainer, sampler, clean_images, protected_images, output_dir, settings, sampling,
                    train=train_flux2_lora, save=save_flux2_lora, sample=generate_flux2_samples, progress=progress)
