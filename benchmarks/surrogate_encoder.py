"""A stand-in for "an encoder you do not have": a second encoder distilled from TAEF2, to measure transfer.

    python -m benchmarks.surrogate_encoder --data ../shared/data/pool --out DIR [--steps 1500] [--cache FILE]

Every protection here is trained (or optimised, for PGD) against TAEF2's encoder. A mimic may use
another one. No second real VAE encoder is available offline, so this trains one: the network of
:mod:`train.surrogate` (another architecture than TAEF2's), from its own random initialisation,
taught only to reproduce TAEF2's latents of clean pool images (mean squared error, random 128²
crops on the latent grid). It never sees a protected image or a gradient of any protection, so
what a protection does to it is transfer, not optimisation: the same latent space (TAEF2's
decoder reads it), other weights and another architecture. Transfer to this stand-in is evidence,
not proof, of transfer to a real, independently trained VAE (which was trained on other data, not
taught TAEF2's function).

``python -m benchmarks.noise_control --mimic-encoder DIR`` scores every row through it.

Writes DIR/surrogate_encoder.safetensors and DIR/surrogate_encoder.json (architecture, steps,
loss, wall time, and the round-trip PSNR of held-out images through it and TAEF2's decoder).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    DEFAULT_IMAGES,
    centre_square,
    machine_info,
    machine_line,
)
from fastprotect.encoders import Autoencoder, ImageEncoder, load_autoencoder
from fastprotect.images import load_image
from fastprotect.metrics import psnr
from fastprotect.vocabulary import is_image_name
from train.generator import load_images
from train.surrogate import BLOCKS, LATENT_CHANNELS, WIDTHS, SurrogateEncoder, make_surrogate, save_surrogate

CROP = 128  # training crops, on the latent grid


def mimic_autoencoder(surrogate: ImageEncoder, taef2: Autoencoder) -> Autoencoder:
    """A mimic that encodes with ``surrogate`` and decodes with TAEF2's decoder (the latent space they share)."""
    return Autoencoder(encoder=surrogate, decoder=taef2.decoder, kind=taef2.kind, source="surrogate encoder + TAEF2 decoder")


@torch.no_grad()
def teacher_latents(teacher: ImageEncoder, images: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """TAEF2's latents of uint8 images N×3×S×S, float16 to halve the memory (the teacher itself is fp16)."""
    out = []
    for start in range(0, len(images), chunk):
        out.append(teacher.encode(images[start:start + chunk].float() / 255).half())
        if start // chunk % 20 == 0:
            print(f"  teacher latents {start + len(out[-1])}/{len(images)}", flush=True)
    return torch.cat(out)


def random_crops(images: torch.Tensor, latents: torch.Tensor, batch: int, crop: int, downscale: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` crops of ``crop``² at positions on the latent grid, with the matching latent windows."""
    index = torch.randint(0, len(images), (batch,), generator=generator)
    cells = (images.shape[-1] - crop) // downscale
    xs = torch.randint(0, cells + 1, (batch,), generator=generator)
    ys = torch.randint(0, cells + 1, (batch,), generator=generator)
    side = crop // downscale
    pixels = torch.stack([images[i, :, y * downscale:y * downscale + crop, x * downscale:x * downscale + crop]
                          for i, x, y in zip(index.tolist(), xs.tolist(), ys.tolist())])
    windows = torch.stack([latents[i, :, y:y + side, x:x + side] for i, x, y in zip(index.tolist(), xs.tolist(), ys.tolist())])
    return pixels.float() / 255, windows.float()


def distil(teacher: ImageEncoder, images: torch.Tensor, *, steps: int, batch: int = 16, crop: int = CROP, lr: float = 2e-3,
           widths: tuple[int, ...] = WIDTHS, blocks: int = BLOCKS, seed: int = 0, latents: torch.Tensor | None = None,
           log_every: int = 50) -> tuple[nn.Sequential, list[float]]:
    """Train a :func:`make_surrogate` network to reproduce ``teacher``'s latents of ``images`` (N×3×S×S uint8).

    Returns the network and its loss every ``log_every`` steps (mean squared latent error).
    """
    torch.manual_seed(seed)
    net = make_surrogate(widths, blocks)
    latents = teacher_latents(teacher, images) if latents is None else latents
    downscale = 2 ** len(widths)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    losses, running = [], 0.0
    for step in range(1, steps + 1):
        pixels, target = random_crops(images, latents, batch, crop, downscale, generator)
        loss = F.mse_loss(net(pixels), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running += loss.item()
        if step % log_every == 0 or step == steps:
            losses.append(running / (log_every if step % log_every == 0 else step % log_every))
            print(f"  step {step}/{steps}: latent MSE {losses[-1]:.4f}", flush=True)
            running = 0.0
    net.eval()
    return net, losses


@torch.no_grad()
def round_trip_psnr(encoder: ImageEncoder, decoder, images: list[torch.Tensor]) -> float:
    """Mean PSNR of decoder(encoder(x)) against x over ``images`` (each 1×3×H×W in [0, 1])."""
    values = [psnr(decoder(encoder.encode(x))[..., : x.shape[-2], : x.shape[-1]].clamp(0, 1), x) for x in images]
    return sum(values) / len(values)


def check_images(folder: Path, count: int, size: int) -> list[torch.Tensor]:
    """The first ``count`` images of each domain folder of ``folder``, centre-cropped to ``size``² (held out)."""
    out = []
    for domain in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(p for p in domain.iterdir() if is_image_name(p.name))[:count]:
            out.append(centre_square(load_image(path).pixels, size))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.surrogate_encoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="training image folders (never the evaluation images)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--teacher", default="checkpoints/taef2-generator", help="folder holding the TAEF2 weights")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="images are loaded at size² (crops of 128² are taken from them)")
    parser.add_argument("--cache", type=Path, default=None, help="a .pt file for the decoded images (train.generator's format)")
    parser.add_argument("--latent-cache", type=Path, default=None, help="a .pt file for the teacher's latents of them")
    parser.add_argument("--check", type=Path, default=DEFAULT_IMAGES, help="held-out images for the round-trip PSNR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS),
                        help="channels of each stride-2 stage (another architecture: a second, independent stand-in)")
    parser.add_argument("--blocks", type=int, default=BLOCKS, help="residual blocks per stage")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    widths = tuple(args.widths)
    started = time.perf_counter()
    taef2 = load_autoencoder("taef2", args.teacher)
    images, _ = load_images(args.data, args.size, args.cache)
    if args.latent_cache is not None and args.latent_cache.is_file():
        latents = torch.load(args.latent_cache)
    else:
        latents = teacher_latents(taef2.encoder, images)
        if args.latent_cache is not None:
            torch.save(latents, args.latent_cache)
    net, losses = distil(taef2.encoder, images, steps=args.steps, batch=args.batch, seed=args.seed, latents=latents,
                         widths=widths, blocks=args.blocks)
    surrogate = SurrogateEncoder(net, widths)
    held_out = check_images(args.check, 4, 256) if args.check.is_dir() else []
    report = {
        "widths": list(widths), "blocks": args.blocks, "latent_channels": LATENT_CHANNELS,
        "parameters": sum(p.numel() for p in net.parameters()),
        "teacher": "TAEF2 encoder", "data": [str(d) for d in args.data], "images": len(images), "steps": args.steps,
        "batch": args.batch, "crop": CROP, "seed": args.seed, "losses_every_50": losses,
        "seconds": round(time.perf_counter() - started, 1), "machine": machine_info("cpu"),
        "round_trip_psnr_heldout": None if not held_out else {
            "images": len(held_out),
            "surrogate": round(round_trip_psnr(surrogate, taef2.decoder, held_out), 2),
            "taef2": round(round_trip_psnr(taef2.encoder, taef2.decoder, held_out), 2),
        },
    }
    save_surrogate(net, args.out, report)
    print(f"{machine_line(report['machine'])}; {report['seconds']} s; round trip {report['round_trip_psnr_heldout']}; in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
