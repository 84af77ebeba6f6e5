"""Quick DreamBooth-style LoRA on a handful of images: the mimicry the protection is meant to break.

A mimic takes 4–8 images of a subject or style, fine-tunes low-rank adapters on the UNet's
attention projections with an instance prompt ("a photo of sks object"), and samples new images
from that prompt. This module does that with diffusers + peft (``unet.add_adapter``), the
standard noise-prediction loss, and diffusers' LoRA file format, so the adapters it writes load
anywhere ``load_lora_weights`` does. :func:`lora_duel` trains one LoRA on the clean images and one
on the protected images with identical settings and seeds: any difference between their samples
comes from the images alone.

Not included (kept out so that a run fits in about two minutes on one GPU, see docs/ATTACKS.md):
prior preservation, text-encoder training, augmentation, learning-rate schedules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from .pipeline import center_square, seeded_generator, stack_images
from .settings import LoraSettings, SampleSettings

ProgressCallback = Callable[[int, int, float], None]  # (step, total, loss) after each step
TRAINED_ADAPTER = "fastprotect_lora"
SETTINGS_FILE = "training.json"


@dataclass
class LoraRun:
    """A trained adapter: diffusers-format LoRA tensors (CPU), its peft config, the loss curve."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict
    settings: LoraSettings
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def autocast_dtype(settings: LoraSettings, model: torch.nn.Module, device: torch.device, *, fp16_safe: bool = True) -> torch.dtype | None:
    """The autocast dtype of a mimic's training forward, or None for plain float32.

    ``"auto"``: off on CPU; on CUDA bf16 when the model is bf16 or not ``fp16_safe`` (FLUX), else fp16
    (SD-1.5's UNet). An explicit ``"fp16"``/``"bf16"`` is honoured; ``"no"`` needs a float32 model."""
    choice = settings.mixed_precision
    if choice == "auto":
        if device.type != "cuda":
            choice = "no"
        else:
            choice = "bf16" if model.dtype == torch.bfloat16 or not fp16_safe else "fp16"
    if choice == "no":
        if model.dtype != torch.float32:
            raise ValueError(f"mixed_precision='no' needs a float32 {type(model).__name__}; this one is {model.dtype}")
        return None
    return torch.float16 if choice == "fp16" else torch.bfloat16


@torch.no_grad()
def _encode_posteriors(pipe: StableDiffusionPipeline, images: list[torch.Tensor], resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior mean and std of each training image (centre square at ``resolution``):
    two N×4×(res/8)×(res/8) float32 tensors. Encoded once: the VAE is frozen, and sampling from the
    cached posterior each step is what re-encoding would give."""
    vae = pipe.vae
    means, stds = [], []
    for image in images:  # one at a time: at 512² the SD VAE encoder is the memory peak
        pixels = center_square(image, resolution).to(vae.device, vae.dtype) * 2 - 1
        posterior = vae.encode(pixels).latent_dist
        means.append(posterior.mean.float())
        stds.append(posterior.std.float())
    return torch.cat(means), torch.cat(stds)


def _scale_latents(pipe: StableDiffusionPipeline, latents: torch.Tensor) -> torch.Tensor:
    """VAE latents -> the UNet's latent space (SD: × 0.18215; shift where the VAE has one)."""
    shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * pipe.vae.config.scaling_factor


def train_lora(
    pipe: StableDiffusionPipeline,
    images: torch.Tensor | list[torch.Tensor],
    settings: LoraSettings = LoraSettings(),
    *,
    progress: ProgressCallback | None = None,
    adapter_name: str = TRAINED_ADAPTER,
) -> LoraRun:
    """Fine-tune a fresh LoRA on ``images`` (B×3×H×W or a list of 1×3×H×W, [0, 1], any sizes).

    Only the adapter trains: the UNet, VAE and text encoder are frozen (``requires_grad`` False)
    and their weights are bit-identical afterwards. The adapter stays attached and active on
    ``pipe.unet`` under ``adapter_name`` so it can be sampled at once; :func:`remove_lora` takes it
    off. Deterministic for a seed on a given device (LoRA init, image order, noise, timesteps).
    """
    items = stack_images(images)
    unet, device = pipe.unet, pipe.device
    autocast = autocast_dtype(settings, unet, device)
    for module in (unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha or settings.rank,
        init_lora_weights="gaussian",  # A ~ N(0, 1/r), B = 0: the adapter starts as the identity
        target_modules=list(settings.target_modules),
    )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)  # peft draws the A matrices from the global RNG
        unet.add_adapter(config, adapter_name=adapter_name)
    trainable = [parameter for parameter in unet.parameters() if parameter.requires_grad]
    for parameter in trainable:  # fp32 master weights for the adapter even when the UNet is half
        parameter.data = parameter.data.float()

    means, stds = _encode_posteriors(pipe, items, settings.resolution)
    with torch.no_grad():
        prompt_embeds, _ = pipe.encode_prompt(settings.instance_prompt, device, 1, False)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # the training-time forward process
    run = LoraRun(state_dict={}, metadata=config.to_dict(), settings=settings)

    def loss_of(batch: list[int], generator: torch.Generator) -> torch.Tensor:
        return _training_step(pipe, noise_scheduler, means[batch], stds[batch], prompt_embeds, generator, autocast)

    run.losses, run.seconds = run_adapter_training(unet, trainable, settings, len(items), loss_of, autocast_dtype=autocast, progress=progress)
    adapter_state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    run.state_dict = {key: value.detach().float().cpu().clone() for key, value in convert_state_dict_to_diffusers(adapter_state).items()}
    return run


def run_adapter_training(
    model: torch.nn.Module,
    trainable: list[torch.nn.Parameter],
    settings: LoraSettings,
    num_items: int,
    loss_of: Callable[[list[int], torch.Generator], torch.Tensor],
    *,
    autocast_dtype: torch.dtype | None,
    progress: ProgressCallback | None = None,
) -> tuple[list[float], float]:
    """The optimisation loop every mimic family shares; returns (loss per step, seconds).

    AdamW on ``trainable`` (the adapter), loss scaling when autocasting to fp16, gradient clipping,
    batches drawn from shuffled epochs of ``num_items`` images, gradient checkpointing on CUDA (or as
    ``settings`` says) only while training. ``loss_of(batch indices, generator)`` computes one step's
    loss; ``generator`` (seeded from ``settings.seed``) is the run's only source of randomness.
    """
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
    checkpointing = settings.gradient_checkpointing if settings.gradient_checkpointing is not None else device.type == "cuda"
    if checkpointing:
        model.enable_gradient_checkpointing()
    generator = seeded_generator(settings.seed)
    losses: list[float] = []
    order: list[int] = []
    start = time.perf_counter()
    model.train()  # gradient checkpointing acts in train mode only; neither family's model has dropout
    try:
        for step in range(settings.steps):
            batch = []
            while len(batch) < settings.batch_size:  # walk through shuffled epochs of the image set
                if not order:
                    order = torch.randperm(num_items, generator=generator).tolist()
                batch.append(order.pop())
            loss = loss_of(batch, generator)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().item())
            if progress is not None:
                progress(step + 1, settings.steps, losses[-1])
    finally:
        model.eval()
        if checkpointing:
            model.disable_gradient_checkpointing()
    return losses, time.perf_counter() - start


def _training_step(
    pipe: StableDiffusionPipeline,
    noise_scheduler: DDPMScheduler,
    mean: torch.Tensor,
    std: torch.Tensor,
    prompt_embeds: torch.Tensor,
    generator: torch.Generator,
    autocast_dtype: torch.dtype | None,
) -> torch.Tensor:
    """One noise-prediction MSE on a batch of cached posteriors (b×4×h×w): the loss, a scalar."""
    device, batch = pipe.device, mean.shape[0]
    # All randomness is drawn on the CPU generator and moved, so runs repeat across devices.
    latents = _scale_latents(pipe, mean + std * torch.randn(mean.shape, generator=generator).to(device))
    noise = torch.randn(latents.shape, generator=generator).to(device)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        prediction = pipe.unet(
            noisy.to(pipe.unet.dtype), timesteps, encoder_hidden_states=prompt_embeds.expand(batch, -1, -1)
        ).sample
    return F.mse_loss(prediction.float(), target.float())


def remove_lora(pipe: StableDiffusionPipeline, adapter_name: str = TRAINED_ADAPTER) -> None:
    """Delete an adapter (trained or loaded) from the pipeline: the base model is back."""
    pipe.delete_adapters(adapter_name)


def save_adapter(run: LoraRun, directory: str | Path, pipeline_class: type, component: str) -> Path:
    """Write the adapter in diffusers' LoRA format (``pytorch_lora_weights.safetensors``, with its
    peft config as metadata) through ``pipeline_class.save_lora_weights`` for the adapted
    ``component`` ("unet" for SD-1.5, "transformer" for FLUX.2), plus ``training.json`` (settings,
    loss curve, seconds). Returns the folder."""
    directory = Path(directory)
    pipeline_class.save_lora_weights(
        directory, **{f"{component}_lora_layers": run.state_dict, f"{component}_lora_adapter_metadata": run.metadata}
    )
    record = {"settings": asdict(run.settings), "losses": run.losses, "seconds": run.seconds}
    (directory / SETTINGS_FILE).write_text(json.dumps(record, indent=2))
    return directory


def save_lora(run: LoraRun, directory: str | Path) -> Path:
    """An SD-1.5 UNet adapter (:func:`save_adapter`)."""
    return save_adapter(run, directory, StableDiffusionPipeline, "unet")


@contextmanager
def use_lora(pipe: StableDiffusionPipeline, directory: str | Path, adapter_name: str = "mimic") -> Iterator[StableDiffusionPipeline]:
    """Load a saved adapter into ``pipe`` for the ``with`` block, then delete it again."""
    pipe.load_lora_weights(str(directory), adapter_name=adapter_name)
    try:
        yield pipe
    finally:
        remove_lora(pipe, adapter_name)


@torch.no_grad()
def generate_samples(pipe: StableDiffusionPipeline, settings: SampleSettings, *, default_prompt: str = LoraSettings.instance_prompt,
                     **call_options: Any) -> torch.Tensor:
    """``settings.count`` images from the pipeline as it stands (with whatever adapter is active):
    count×3×res×res in [0, 1]. Sample i uses seed ``settings.seed + i``, so sample i is the same
    image whatever the count, and two adapters sampled with the same settings share their noise.
    ``call_options`` go to the pipeline call as they are (a family's text-encoder options)."""
    samples = []
    for index in range(settings.count):
        output = pipe(
            prompt=settings.prompt or default_prompt,
            height=settings.resolution,
            width=settings.resolution,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance_scale,
            generator=seeded_generator(settings.seed + index),
            output_type="pt",
            **call_options,
        )
        samples.append(output.images.float().cpu())
    return torch.cat(samples)


@dataclass
class DuelResult:
    """The two LoRAs of a duel and their samples (count×3×res×res, [0, 1], same seeds)."""

    clean: LoraRun
    protected: LoraRun
    clean_samples: torch.Tensor
    protected_samples: torch.Tensor
    clean_dir: Path
    protected_dir: Path


def lora_duel(
    pipe: StableDiffusionPipeline,
    clean_images: torch.Tensor | list[torch.Tensor],
    protected_images: torch.Tensor | list[torch.Tensor],
    output_dir: str | Path,
    settings: LoraSettings = LoraSettings(),
    sampling: SampleSettings | None = None,
    *,
    progress: Callable[[str, int, int, float], None] | None = None,
) -> DuelResult:
    """Train a LoRA on the clean set and one on the protected set, identical settings and seeds,
    save both under ``output_dir/{clean,protected}/``, reload each from disk and sample it.

    ``progress(name, step, total, loss)`` with name "clean" or "protected". ``sampling`` defaults to
    4 samples of the instance prompt at the training resolution.
    """
    sampling = sampling or SampleSettings(resolution=settings.resolution)
    sampling = replace(sampling, prompt=sampling.prompt or settings.instance_prompt)
    return run_duel(pipe, pipe, clean_images, protected_images, output_dir, settings, sampling,
                    train=train_lora, save=save_lora, sample=generate_samples, progress=progress)


def run_duel(trainer, sampler, clean_images, protected_images, output_dir: str | Path, settings: LoraSettings,
             sampling: SampleSettings, *, train: Callable, save: Callable, sample: Callable,
             progress: Callable[[str, int, int, float], None] | None = None) -> DuelResult:
    """The duel every mimic family runs: ``train(trainer, images, settings, progress=...)`` a LoRA on
    each set, ``save`` it under ``output_dir/{clean,protected}/``, load each saved file into
    ``sampler`` and ``sample(sampler, sampling)`` with identical seeds (``trainer`` may be ``sampler``)."""
    output_dir = Path(output_dir)
    runs, dirs, samples = {}, {}, {}
    for name, images in (("clean", clean_images), ("protected", protected_images)):
        report = (lambda step, total, loss, name=name: progress(name, step, total, loss)) if progress else None
        runs[name] = train(trainer, images, settings, progress=report)
        remove_lora(trainer)
        dirs[name] = save(runs[name], output_dir / name)
    for name in runs:  # sample from the saved files: what a mimic would share is what we test
        with use_lora(sampler, dirs[name]):
            samples[name] = sample(sampler, sampling)
    return DuelResult(runs["clean"], runs["protected"], samples["clean"], samples["protected"], dirs["clean"], dirs["protected"])
