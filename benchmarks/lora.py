"""Measure a quick-LoRA step and a sampling step at 512² with an SD-1.5-sized model (random weights).

    python -m benchmarks.lora                      # on a CUDA machine: the numbers docs/ATTACKS.md lacks
    python -m benchmarks.lora --device cpu --resolution 64 --steps 2 --sample-steps 2   # smoke run

Random weights cost exactly what real ones do (same shapes, same kernels), so step time and peak
memory transfer to SD-1.5; nothing is downloaded. It runs the real training code
(:func:`attack.lora.train_lora`) and sampling code (:func:`attack.lora.generate_samples`), prints
one table row per configuration and the estimated duration of a default LoRA duel.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from diffusers import StableDiffusionPipeline

from attack.lora import (
    LoraSettings,
    SampleSettings,
    generate_samples,
    remove_lora,
    train_lora,
)
from attack.pipeline import default_dtype, resolve_device
from fastprotect.dummy import dummy_sd15_pipeline


def build_sd15_sized_pipeline(device: torch.device, dtype: torch.dtype, seed: int = 0) -> StableDiffusionPipeline:
    """SD-1.5's architecture (UNet 860M, VAE 84M, CLIP ViT-L/14 text encoder 123M), random weights
    (:func:`fastprotect.dummy.dummy_sd15_pipeline` with ``full_size``), on ``device`` in ``dtype``."""
    return dummy_sd15_pipeline(seed, full_size=True).to(device, dtype)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_training(pipe: StableDiffusionPipeline, settings: LoraSettings, images: torch.Tensor, warmup: int) -> tuple[float, float]:
    """Seconds per optimiser step (after ``warmup`` steps) and peak GiB of one train_lora run."""
    device = pipe.device
    stamps: list[float] = []

    def stamp(step: int, total: int, loss: float) -> None:
        _synchronize(device)
        stamps.append(time.perf_counter())

    _reset_peak(device)
    train_lora(pipe, images, settings, progress=stamp)
    peak = _peak_gib(device)
    remove_lora(pipe)
    timed = stamps[warmup:]
    return (timed[-1] - timed[0]) / max(len(timed) - 1, 1), peak


def bench_sampling(pipe: StableDiffusionPipeline, sampling: SampleSettings) -> tuple[float, float]:
    """Seconds per generated image (after one warm-up image) and peak GiB."""
    device = pipe.device
    generate_samples(pipe, replace(sampling, count=1))
    _reset_peak(device)
    _synchronize(device)
    start = time.perf_counter()
    generate_samples(pipe, sampling)
    _synchronize(device)
    return (time.perf_counter() - start) / sampling.count, _peak_gib(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resolution", type=int, default=LoraSettings.resolution)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per configuration (plus warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--images", type=int, default=6, help="training images (4–8 in the Space)")
    parser.add_argument("--samples", type=int, default=SampleSettings.count)
    parser.add_argument("--sample-steps", type=int, default=SampleSettings.steps)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    dtype = default_dtype(device)
    pipe = build_sd15_sized_pipeline(device, dtype)
    images = torch.rand(args.images, 3, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; weights {dtype}; {args.resolution}²; UNet {sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.0f}M parameters")
    print("| configuration | s/step | steps/s | peak GiB |")
    print("| --- | --- | --- | --- |")
    defaults = LoraSettings(resolution=args.resolution, steps=args.steps + args.warmup)
    checkpointing_options = (True, False) if device.type == "cuda" else (False,)
    step_seconds = {}
    for checkpointing in checkpointing_options:
        settings = replace(defaults, gradient_checkpointing=checkpointing)
        seconds, peak = bench_training(pipe, settings, images, args.warmup)
        step_seconds[checkpointing] = seconds
        label = f"LoRA r{settings.rank} train, batch {settings.batch_size}, mixed precision {settings.mixed_precision}, checkpointing {'on' if checkpointing else 'off'}"
        print(f"| {label} | {seconds:.3f} | {1 / seconds:.2f} | {peak:.2f} |")
    sampling = SampleSettings(count=args.samples, steps=args.sample_steps, resolution=args.resolution)
    per_image, peak = bench_sampling(pipe, sampling)
    print(f"| sample 1 image, {sampling.steps} steps, CFG {sampling.guidance_scale} | {per_image:.3f} (per image) | – | {peak:.2f} |")
    default_steps = LoraSettings.steps
    duel = 2 * default_steps * step_seconds[checkpointing_options[0]] + 2 * sampling.count * per_image
    print(f"estimated default duel (2 × {default_steps} steps + 2 × {sampling.count} samples, model load and VAE encode excluded): {duel:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
