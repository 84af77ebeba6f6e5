"""Choosing the generator's minimum energy on training-pool images (never the evaluation images).

    python -m benchmarks.min_energy [--pool ../shared/data/pool] [--draw 800] [--lowest 48] [--levels 2.5 3.0]
                                    [--ceilings 0.5] [--forms blue-yellow colour both] [--blocks 0 8]
                                    [--out benchmarks/results/min_energy_pool.json]

The minimum acts only on images whose default δ stays below it (flat fills, plain backgrounds), so it is tuned on
those: ``--draw`` pool images in a seeded order, centre squares at ``--size``², keep the ``--lowest`` whose default δ
has the smallest RMS (all below ``--below`` levels, η 8). Every row protects them through ``Protector.protect`` (the
library's path) and is measured with ``benchmarks.noise_control``'s functions (LPIPS-alex and VGG, PSNR, flat ratio,
damage, same-PSNR noise damage, JPEG q75 / resize-half survival) plus the PSNR of the change's BT.601 luma alone
("luma PSNR": how much of it is brightness). Rows: the generator without a minimum, then each minimum × floor ceiling
× form (``fill_form``: "blue-yellow", JPEG's Cb only; "colour", Cb and Cr; "both", brightness and colour) × squares
(``fill_block``: 0, G's pixel detail; 8, constant over JPEG's 8×8 blocks). Results keep every row's per-image values;
rows of an earlier run on the same images are kept (a run can add rows). The held-out confirmation is
``benchmarks.noise_control --generator COPY`` (docs/EVALUATION.md).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from benchmarks.common import (
    DEFAULT_WEIGHTS,
    SHARED,
    centre_square,
    generator_protector,
    machine_info,
    machine_line,
    write_json,
)
from benchmarks.noise_control import (
    DOMAINS,
    generator_variant,
    measure_per_image,
    protect_all,
    row_line,
    summarise_row,
)
from fastprotect.bundle import bundled_checkpoint
from fastprotect.evaluation import Harness
from fastprotect.generator import FILL_FORM_NAMES, FILL_FORMS
from fastprotect.images import ImageError, load_image
from fastprotect.metrics import luma
from fastprotect.perceptual import load_perceptual
from fastprotect.protect import Protector
from fastprotect.vocabulary import TARGET_NAMES, eta_from_levels, is_image_name

DEFAULT_POOL = SHARED / "data" / "pool"
DEFAULT_OUT = Path("benchmarks/results/min_energy_pool.json")


def pool_names(pool: Path, draw: int, seed: int) -> list[str]:
    """``draw`` image paths of the pool (domain/file, relative to it), in a seeded order."""
    names = sorted(f"{d}/{path.name}" for d in DOMAINS if (pool / d).is_dir() for path in (pool / d).iterdir() if is_image_name(path.name))
    random.Random(seed).shuffle(names)
    return names[:draw]


@torch.no_grad()
def lowest_energy(protector: Protector, images: dict[str, torch.Tensor], lowest: int, below: float) -> list[str]:
    """The ``lowest`` names whose default δ (η 8, the generator alone, no minimum) has the smallest RMS, all below
    ``below`` levels: the images a minimum energy would act on."""
    generator, eta = protector.generator.with_config(fill_rms_levels=0.0), eta_from_levels(8)
    energy = {name: float(generator.perturbation(x, eta).pow(2).mean().sqrt()) * 255 for name, x in images.items()}
    return sorted((name for name, rms in energy.items() if rms < below), key=energy.__getitem__)[:lowest]


def variants(levels: list[float], ceilings: list[float], forms: list[str], blocks: tuple[int, ...] = (0,)) -> dict[str, dict]:
    """Row label -> GeneratorConfig changes (first the generator without a minimum). Pixel detail (block 0) keeps the
    label the first runs gave it, before there were squares."""
    rows: dict[str, dict] = {"default (no minimum)": {"fill_rms_levels": 0.0}}
    for level in levels:
        for ceiling in ceilings:
            for form in forms:
                for block in blocks:
                    squares = f", in {block}-px squares" if block > 1 else ""
                    rows[f"minimum {level:g}, floor ≤ {ceiling:g}, {FILL_FORM_NAMES[form]}{squares}"] = {
                        "fill_rms_levels": level, "fill_floor_max": ceiling, "fill_form": form, "fill_block": block}
    return rows


def luma_psnr(clean: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """Per image, the PSNR of the change's BT.601 luma alone (dB): high = little of the change is brightness."""
    return -10 * torch.log10(luma(protected - clean).pow(2).flatten(1).mean(1).clamp_min(1e-12))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.min_energy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    parser.add_argument("--generator", type=Path, default=bundled_checkpoint("taef2-generator"))
    parser.add_argument("--draw", type=int, default=800)
    parser.add_argument("--lowest", type=int, default=48)
    parser.add_argument("--below", type=float, default=2.5, help="only images whose default δ RMS is below this (levels at η 8)")
    parser.add_argument("--levels", type=float, nargs="+", default=[2.5, 3.0])
    parser.add_argument("--ceilings", type=float, nargs="+", default=[0.5])
    parser.add_argument("--forms", nargs="+", choices=FILL_FORMS, default=list(FILL_FORMS))
    parser.add_argument("--blocks", type=int, nargs="+", default=[0], help="fill_block values (0: pixel detail)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    protector = generator_variant(generator_protector(parser, args.generator), fill_rms_levels=0.0)  # images are chosen by the δ they get without a minimum
    images = {}
    for name in pool_names(args.pool, args.draw, args.seed):
        try:
            images[name] = centre_square(load_image(args.pool / name).pixels, args.size)
        except ImageError as error:
            print(f"skipped {name}: {error}")
    chosen = lowest_energy(protector, images, args.lowest, args.below)
    if not chosen:
        parser.error(f"no image of the {len(images)} drawn has a default δ below {args.below} levels")
    domains = [name.split("/")[0] for name in chosen]
    batch = torch.cat([images[name] for name in chosen])
    vgg = load_perceptual("vgg", args.weights / "vgg16_lpips_features.safetensors")
    harness = Harness(protector.autoencoder, protector.perceptual, protector.target_images, perceptual_vgg=vgg, extended=True)
    targets = torch.full((len(batch),), TARGET_NAMES.index("mid"), dtype=torch.long)
    info, rows, per_image = machine_info("cpu"), {}, {}
    earlier = json.loads(args.out.read_text()) if args.out.exists() else {}
    if earlier.get("images") == chosen and earlier.get("size") == args.size:  # the same images: add to its rows
        rows, per_image = earlier["rows"], earlier["per_image"]
    notes = {"notes": earlier["notes"]} if "notes" in earlier and rows else {}
    print(f"{len(chosen)} of {len(images)} drawn pool images, {', '.join(f'{d} {domains.count(d)}' for d in DOMAINS)}")
    for label, changes in variants(args.levels, args.ceilings, args.forms, tuple(args.blocks)).items():
        protected, seconds = protect_all(generator_variant(protector, **changes), batch, eta_from_levels(8))
        values = measure_per_image(harness, batch, protected, targets, robust=True)
        values["luma_psnr"] = luma_psnr(batch, protected)
        rows[label] = summarise_row(values, domains)
        rows[label]["all"]["seconds_per_image"] = seconds
        per_image[label] = {key: [round(float(v), 6) for v in value] for key, value in values.items()}
        print(f"{row_line(label, rows[label])} luma PSNR {rows[label]['all']['luma_psnr']:.1f} dB", flush=True)
        write_json(args.out, {"machine": info, "images": chosen, "size": args.size, "rows": rows, "per_image": per_image} | notes)
    print(f"\n{machine_line(info)}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
