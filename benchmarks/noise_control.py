"""Protection vs random noise of the same energy, with every visibility measure (issue 10's protocol).

    python -m benchmarks.noise_control [--per-domain 4] [--size 256]

For held-out images of the bundled checkpoint's evaluation (checkpoints/taef2-mixture/eval.json, the
first ``--per-domain`` of each domain, centre squares at ``--size``²) and each method row, prints
LPIPS-alex, LPIPS-VGG, PSNR, the flat-region energy ratio, the mimic damage (TAEF2 round trip,
``fastprotect.evaluation``), the damage of random noise with the same energy
(``fastprotect.evaluation.matched_noise``) and their ratio, pooled and per domain. Rows: random ±4
and ±8 sign noise (the ratio's sanity check: ≈ 1), the mixture with adaptive strength at η 8 and
4, and the mixture times a texture mask (local-contrast budget map, less change in flat areas).
Needs the real weights (LPIPS VGG for the second visibility measure) from ``--weights``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import DEFAULT_IMAGES, DEFAULT_WEIGHTS, machine_info, machine_line, write_json
from fastprotect.bundle import bundled_checkpoint
from fastprotect.evaluation import Harness, local_contrast, matched_noise, summarise
from fastprotect.images import load_image, resize_tensor
from fastprotect.perceptual import load_perceptual
from fastprotect.protect import Protector
from fastprotect.strength import quantise_within_budget
from fastprotect.vocabulary import eta_from_levels

DOMAINS = ("cartoon", "face", "object", "painting")
MASKED = ((8, 1.0, 0.2), (12, 1.0, 0.1), (16, 1.0, 0.1))  # (η levels, γ, floor) of the texture-mask rows


def centre_square(image: torch.Tensor, size: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return (resize_tensor(image[..., top : top + side, left : left + side], size, size).clamp(0, 1) * 255).round() / 255


def texture_mask(images: torch.Tensor, gamma: float, floor: float, reference: float) -> torch.Tensor:
    """Per-pixel budget scale in [floor, 1]: (local contrast / the set's median) ** gamma, clipped."""
    return (local_contrast(images) / reference).pow(gamma).clamp(floor, 1.0)


def protect_all(protector: Protector, images: torch.Tensor, eta: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    out = []
    for i in range(len(images)):
        x = images[i : i + 1]
        result = protector.protect(x, eta=eta, compute_metrics=False).image
        if mask is not None:
            result = quantise_within_budget(x, (x + (result - x) * mask[i : i + 1]).clamp(0, 1), eta)
        out.append(result)
    return torch.cat(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.noise_control", description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-domain", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/noise_control_cpu_taef2.json"))
    args = parser.parse_args(argv)
    checkpoint = bundled_checkpoint()
    listed = json.loads((checkpoint / "eval.json").read_text())["images"]
    names = [n for d in DOMAINS for n in [m for m in listed if m.startswith(d + "/")][: args.per_domain]]
    domains = [name.split("/")[0] for name in names]
    images = torch.cat([centre_square(load_image(args.images / name).pixels, args.size) for name in names])
    protector = Protector.from_pretrained(checkpoint)
    vgg = load_perceptual("vgg", args.weights / "vgg16_lpips_features.safetensors")
    harness = Harness(protector.autoencoder, protector.perceptual, protector.target_images, perceptual_vgg=vgg, extended=True)
    targets = torch.zeros(len(images), dtype=torch.long)  # damage does not depend on the target
    rows: dict[str, dict] = {}

    def score(label: str, protected: torch.Tensor) -> None:
        measured = harness.measure(images, protected, targets)
        noise = harness.measure(images, matched_noise(images, protected, torch.Generator().manual_seed(0)), targets)
        per_image = {key: measured[key] for key in ("lpips", "lpips_vgg", "psnr", "flat_ratio", "damage")}
        per_image["noise_damage"] = noise["damage"]
        summary = summarise(per_image, domains)
        rows[label] = {domain: {**values, "ratio": values["damage"] / max(values["noise_damage"], 1e-6)} for domain, values in summary.items()}
        print(row_line(label, rows[label]), flush=True)

    reference = float(local_contrast(images).median())
    for levels in (4, 8):
        signs = torch.randint(0, 2, images.shape, generator=torch.Generator().manual_seed(levels)).float() * 2 - 1
        score(f"random ±{levels} sign noise", (images + signs * levels / 255).clamp(0, 1))
    score("mixture, adaptive strength, η 8 (default)", protect_all(protector, images, eta_from_levels(8)))
    score("mixture, adaptive strength, η 4", protect_all(protector, images, eta_from_levels(4)))
    for levels, gamma, floor in MASKED:
        mask = texture_mask(images, gamma, floor, reference)
        score(f"mixture η {levels} × texture mask (γ {gamma:g}, floor {floor:g})", protect_all(protector, images, eta_from_levels(levels), mask))
    info = machine_info("cpu")
    write_json(args.out, {"machine": info, "images": names, "size": args.size, "rows": rows})
    print(f"\n{machine_line(info)}; {len(names)} held-out images at {args.size}²; results in {args.out}")
    return 0


def row_line(label: str, row: dict) -> str:
    pooled = row["all"]
    per_domain = " · ".join(f"{d} {row[d]['ratio']:.2f}" for d in DOMAINS if d in row)
    return (f"| {label} | {pooled['lpips']:.3f} | {pooled['lpips_vgg']:.3f} | {pooled['psnr']:.1f} | {pooled['flat_ratio']:.2f} "
            f"| {pooled['damage']:.3f} | {pooled['noise_damage']:.3f} | {pooled['ratio']:.2f} | {per_domain} |")


if __name__ == "__main__":
    print("| row | LPIPS-alex | LPIPS-VGG | PSNR dB | flat ratio | damage | noise damage | ratio | ratio per domain |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    raise SystemExit(main())
