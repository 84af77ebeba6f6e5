"""Where the encoder is sensitive: the protection loss's steepest directions, held to the default's energy.

    python -m benchmarks.sensitivity [--per-domain 4] [--out benchmarks/results/sensitivity_taef2.json]

Why does per-image PGD stay above the generator's frontier only where both are judged through TAEF2 itself,
before any re-encoding (docs/EVALUATION.md, "Against per-image PGD")? This benchmark asks the encoder. For each
held-out image (noise_control's sample, 256² centre squares) it takes the first-order direction of the
protection loss at the clean image, −∇ₓ loss (pull towards the "mid" target, as PGD and training use), and
writes several perturbations, each scaled to the *same energy as the default generator's δ on that image*
(same RMS, so the same PSNR up to 8-bit rounding):

* the default generator's own δ (η 8) — the energy every other row is held to;
* −∇ itself (the steepest step for a given energy) and −∇ inside the generator's texture budget (−∇ ⊙ m);
* sign(−∇) (the steepest step in the L∞ box, FGSM's) and sign(−∇) ⊙ m;
* per-image PGD's δ (8 steps, η 4: the reference whose visibility is nearest the default's), rescaled.

Each row gets the four visibility measures of issue 10 (LPIPS-alex, LPIPS-VGG, PSNR, flat-region energy ratio),
the mimic damage, the damage of same-PSNR random noise and the cosine between δ and −∇. The line above the table
gives the gradient's own flat-region ratio: how much stronger per pixel (RMS) the encoder's steepest direction is
where the image is flat than where it is textured. Measured on the 2-core VM: see docs/EVALUATION.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import (
    DEFAULT_IMAGES,
    DEFAULT_WEIGHTS,
    centre_square,
    machine_info,
    machine_line,
    write_json,
)
from benchmarks.noise_control import per_image_pgd, same_energy_noise, sample_names
from fastprotect.bundle import bundled_checkpoint
from fastprotect.encoders import EncoderOutput, ImageEncoder
from fastprotect.evaluation import Harness, flat_region_energy_ratio
from fastprotect.images import load_image
from fastprotect.losses import encode_target, protection_loss
from fastprotect.perceptual import load_perceptual
from fastprotect.protect import Protector
from fastprotect.vocabulary import TARGET_NAMES, eta_from_levels

DEFAULT_OUT = Path("benchmarks/results/sensitivity_taef2.json")
PGD_LEVELS = 4  # per-image PGD at η 4 has about the default's LPIPS-alex (0.056 vs 0.057 on the 16 images)


def steepest_direction(encoder: ImageEncoder, images: torch.Tensor, target: EncoderOutput) -> torch.Tensor:
    """−∇ₓ of the protection loss at each clean image (B×3×H×W): the direction that pulls fastest at first order."""
    delta = torch.zeros_like(images, requires_grad=True)
    loss = protection_loss(encoder(images + delta), target).sum()
    (gradient,) = torch.autograd.grad(loss, delta)
    return -gradient


def rms(delta: torch.Tensor) -> torch.Tensor:
    """Each image's RMS (B)."""
    return delta.pow(2).flatten(1).mean(1).sqrt()


def at_energy(delta: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """Each image's δ scaled to RMS ``energy`` (B): same direction, same energy as the row it is compared with."""
    return delta * (energy / rms(delta).clamp_min(1e-12)).view(-1, 1, 1, 1)


def written(images: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The protected images as a file holds them: clipped to [0, 1] and rounded to 8 bits."""
    return ((images + delta).clamp(0, 1) * 255).round() / 255


def directions(steepest: torch.Tensor, budget: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first-order rows' directions (label -> B×3×H×W), before scaling to the reference energy."""
    return {
        "−∇ (steepest for its energy)": steepest,
        "−∇ ⊙ m (inside the generator's texture budget)": steepest * budget,
        "sign(−∇) (steepest in the L∞ box, FGSM)": steepest.sign(),
        "sign(−∇) ⊙ m": steepest.sign() * budget,
    }


def score(harness: Harness, images: torch.Tensor, protected: torch.Tensor, steepest: torch.Tensor,
          targets: torch.Tensor) -> dict[str, float]:
    """One row's pooled means: visibility, damage, same-PSNR noise damage, their ratio and cos(δ, −∇)."""
    visibility = harness.invisibility(images, protected)
    damage = harness.efficacy(images, protected, targets)["damage"]
    noise = harness.efficacy(images, same_energy_noise(images, protected), targets)["damage"]
    cosine = F.cosine_similarity((protected - images).flatten(1), steepest.flatten(1), dim=1)
    return {"lpips": float(visibility["lpips"].mean()), "lpips_vgg": float(visibility["lpips_vgg"].mean()),
            "psnr": float(visibility["psnr"].mean()), "flat_ratio": float(visibility["flat_ratio"].mean()),
            "damage": float(damage.mean()), "noise_damage": float(noise.mean()),
            "ratio": float(damage.mean() / noise.mean().clamp_min(1e-6)), "cos_steepest": float(cosine.mean())}


def row_line(label: str, row: dict[str, float]) -> str:
    return (f"| {label} | {row['lpips']:.3f} | {row['lpips_vgg']:.3f} | {row['psnr']:.1f} | {row['flat_ratio']:.2f} | "
            f"{row['damage']:.4f} | {row['ratio']:.2f} | {row['cos_steepest']:+.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sensitivity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-domain", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--generator", type=Path, default=bundled_checkpoint("taef2-generator"), help="generator checkpoint folder")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    names = sample_names("heldout", args.images, args.per_domain)
    images = torch.cat([centre_square(load_image(args.images / name).pixels, args.size) for name in names])
    mixture = Protector.from_pretrained(bundled_checkpoint("taef2-mixture"))
    generator = Protector.from_pretrained(args.generator)
    vgg = load_perceptual("vgg", args.weights / "vgg16_lpips_features.safetensors")
    harness = Harness(mixture.autoencoder, mixture.perceptual, mixture.target_images, perceptual_vgg=vgg, extended=True)
    mid = TARGET_NAMES.index("mid")
    targets = torch.full((len(images),), mid, dtype=torch.long)
    target = encode_target(mixture.encoder, mixture.target_images[mid : mid + 1], args.size, args.size)
    steepest = torch.cat([steepest_direction(mixture.encoder, images[i : i + 1], target) for i in range(len(images))])
    eta = eta_from_levels(8)
    default = torch.cat([generator.protect(images[i : i + 1], eta=eta, compute_metrics=False).image for i in range(len(images))])
    energy = rms(default - images)  # every other row is held to this energy, image by image
    budget = generator.generator.budget(images)
    pgd, _ = per_image_pgd(mixture, images, eta_from_levels(PGD_LEVELS))
    rows = {"default generator δ (η 8): the energy every row is held to": score(harness, images, default, steepest, targets)}
    for label, direction in directions(steepest, budget).items():
        rows[f"{label}, at that energy"] = score(harness, images, written(images, at_energy(direction, energy)), steepest, targets)
    rows[f"per-image PGD δ (8 steps, η {PGD_LEVELS}), rescaled to that energy"] = score(
        harness, images, written(images, at_energy(pgd - images, energy)), steepest, targets)
    gradient_flat = float(flat_region_energy_ratio(images, images + steepest).mean())  # the direction itself, unclipped
    info = machine_info("cpu")
    print(f"The encoder's steepest direction −∇ is {gradient_flat:.2f}× as strong per pixel (RMS) where the images are "
          "flat (lowest third of local contrast) as where they are textured (highest third): its flat-region ratio.")
    print("| row | LPIPS-alex | LPIPS-VGG | PSNR dB | flat ratio | damage | × same-PSNR noise | cos(δ, −∇) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, row in rows.items():
        print(row_line(label, row))
    write_json(args.out, {"machine": info, "images": names, "size": args.size, "generator": str(args.generator),
                          "gradient_flat_ratio": gradient_flat, "rows": rows})
    print(f"\n{machine_line(info)}; {len(names)} held-out images at {args.size}², scored through TAEF2; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
