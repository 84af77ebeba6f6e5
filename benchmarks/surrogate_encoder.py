"""A stand-in for "an encoder you do not have": a second encoder distilled from TAEF2, to measure transfer.

    python -m benchmarks.surrogate_encoder --data ../shared/data/pool --out DIR [--steps 1500] [--cache FILE]

Every protection here is trained (or optimised, for PGD) against TAEF2's encoder. A mimic may use
another one. No second real VAE encoder is available offline, so this trains one: a network of a
*different* architecture (GroupNorm + SiLU residual blocks at widths 64/96/128, 4×4 strided
convolutions: the SD-VAE family's style, not TAEF2's constant-width ReLU blocks), from its own
random initialisation, taught only to reproduce TAEF2's latents of clean pool images (mean squared
error, random 128² crops on the latent grid). It never sees a protected image or a gradient of any
protection, so what a protection does to it is transfer, not optimisation: the same latent space
(TAEF2's decoder reads it), other weights and another architecture. Transfer to this stand-in is
evidence, not proof, of transfer to a real, independently trained VAE (which was trained on other
data, not taught TAEF2's function).

``python -m benchmarks.noise_control --mimic-encoder DIR`` scores every row through it.

Writes DIR/surrogate_encoder.safetensors and DIR/surrogate_encoder.json (architecture, steps,
loss, wall time, and the round-trip PSNR of held-out images through it and TAEF2's decoder).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from benchmarks.common import (
    DEFAULT_IMAGES,
    centre_square,
    machine_info,
    machine_line,
    write_json,
)
from fastprotect.encoders import Autoencoder, ImageEncoder, load_autoencoder
from fastprotect.images import load_image
from fastprotect.metrics import psnr
from fastprotect.vocabulary import is_image_name

WEIGHTS_NAME = "surrogate_encoder.safetensors"
CONFIG_NAME = "surrogate_encoder.json"
WIDTHS = (64, 96, 128)  # one stride-2 stage each: 8× down like TAEF2
BLOCKS = 2  # residual blocks per stage
CROP = 128  # training crops, on the latent grid
LATENT_CHANNELS = 32  # TAEF2's latent space: its decoder reads the surrogate's output


class ResidualBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))): the SD-VAE family's block, unlike TAEF2's."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def make_surrogate(widths: tuple[int, ...] = WIDTHS, blocks: int = BLOCKS, latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """stem conv(3→32) → per width: 4×4 stride-2 conv, ``blocks`` residual blocks → GN, SiLU, conv → latent."""
    layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, padding=1), nn.SiLU()]
    previous = 32
    for width in widths:
        layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1)] + [ResidualBlock(width) for _ in range(blocks)]
        previous = width
    layers += [nn.GroupNorm(8, previous), nn.SiLU(), nn.Conv2d(previous, latent_channels, 3, padding=1)]
    return nn.Sequential(*layers)


class SurrogateEncoder(ImageEncoder):
    """The distilled stand-in as a frozen :class:`ImageEncoder` (features: each stage's output)."""

    kind = "taef2"  # it writes TAEF2's latent space
    latent_channels = LATENT_CHANNELS

    def __init__(self, net: nn.Sequential, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.net = net
        self.downscale = 2 ** len(widths)
        self.feature_channels = tuple(widths)
        self.feature_strides = tuple(2 ** (i + 1) for i in range(len(widths)))
        self.requires_grad_(False)
        self.eval()

    def _encode_padded(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, features = images, []
        layers = list(self.net)
        for index, layer in enumerate(layers):
            h = layer(h)
            last_of_stage = isinstance(layer, ResidualBlock) and not isinstance(layers[index + 1], ResidualBlock)
            if last_of_stage:
                features.append(h)
        return h, features


def load_surrogate(folder: Path) -> SurrogateEncoder:
    """The encoder saved by this module's training in ``folder`` (a one-line error when it is not there)."""
    config_path, weights_path = Path(folder) / CONFIG_NAME, Path(folder) / WEIGHTS_NAME
    if not (config_path.is_file() and weights_path.is_file()):
        raise FileNotFoundError(f"{folder} holds no surrogate encoder ({CONFIG_NAME} + {WEIGHTS_NAME}); "
                                "train one with python -m benchmarks.surrogate_encoder")
    config = json.loads(config_path.read_text())
    widths, blocks = tuple(config["widths"]), int(config["blocks"])
    net = make_surrogate(widths, blocks)
    net.load_state_dict(load_file(str(weights_path)))
    net.eval()
    return SurrogateEncoder(net, widths)


def save_surrogate(net: nn.Sequential, folder: Path, report: dict) -> None:
    """Write ``net`` and ``report`` (which must name its ``widths`` and ``blocks``) for :func:`load_surrogate`."""
    if not {"widths", "blocks"} <= report.keys():
        raise ValueError("the report must hold the architecture: widths and blocks")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS_NAME))
    write_json(folder / CONFIG_NAME, report)


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
    from train.generator import load_images

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
