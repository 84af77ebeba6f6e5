"""How much of the generator's damage a JPEG re-encoding leaves when JPEG's 8×8 grid is, or is not, the image's own.

    python -m benchmarks.jpeg_grid [--per-domain 13] [--quality 75] [--offsets 0 1 2 3 4 5 6 7]
                                   [--out benchmarks/results/jpeg_grid.json]

The default lifts flat images (its minimum energy) with G's pixel detail. Written constant over 8×8 squares counted
from the top-left corner instead (``fill_block`` 8), the change sits on the squares JPEG cuts when it re-encodes the
image at its size, which keep a square's mean colour far better than detail; a crop that does not keep the grid (a
shift that is not a multiple of 8) or a resize loses that. This measures both on the held-out images the minimum lifts
(those whose δ changes when it is turned off), at η 8 through TAEF2: the damage, then the damage left after
JPEG on a grid shifted by k px (the image padded by k rows and columns at its top and left by repeating its border,
encoded, decoded and cut back; the clean image goes through the same), k = 0 being a re-encoding at the same size;
and after a platform's usual pair, a resize to half size (bilinear, antialiased) then JPEG at that size, brought back
to full size for the mimic's encoder.
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
    generator_protector,
    machine_info,
    machine_line,
    write_json,
)
from benchmarks.noise_control import generator_variant, protect_all, sample_names
from fastprotect.bundle import bundled_checkpoint
from fastprotect.evaluation import Harness, transform
from fastprotect.images import load_image
from fastprotect.protect import Protector
from fastprotect.vocabulary import TARGET_NAMES, eta_from_levels

DEFAULT_OUT = Path("benchmarks/results/jpeg_grid.json")
VARIANTS = {"lift at pixel detail (fill_block 0, the default)": 0, "lift in 8-px squares (fill_block 8)": 8}


def shifted_jpeg(images: torch.Tensor, quality: int, offset: int) -> torch.Tensor:
    """JPEG at ``quality`` on a grid ``offset`` px below and right of the images' own (B×3×H×W in [0, 1])."""
    if offset == 0:
        return transform(images, f"jpeg{quality}", torch.Generator())
    padded = F.pad(images, (offset, 0, offset, 0), mode="replicate")
    return transform(padded, f"jpeg{quality}", torch.Generator())[..., offset:, offset:]


def half_then_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Resized to half size, JPEG at ``quality`` there, and back to full size (bilinear)."""
    height, width = images.shape[-2:]
    small = F.interpolate(images, size=(height // 2, width // 2), mode="bilinear", align_corners=False, antialias=True)
    seen = transform(small.clamp(0, 1), f"jpeg{quality}", torch.Generator())
    return F.interpolate(seen, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)


def lifted_names(protector: Protector, images: dict[str, torch.Tensor]) -> list[str]:
    """The images whose protection changes when the minimum energy is turned off: those it lifts."""
    without = generator_variant(protector, fill_rms_levels=0.0)
    return [name for name, x in images.items()
            if not torch.equal(protect_all(protector, x, eta_from_levels(8))[0], protect_all(without, x, eta_from_levels(8))[0])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jpeg_grid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-domain", type=int, default=13, help="held-out images per domain to look for lifted ones in")
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--offsets", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--generator", type=Path, default=bundled_checkpoint("taef2-generator"))
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    protector = generator_protector(parser, args.generator)
    names = sample_names("heldout", args.images, args.per_domain)
    images = {name: centre_square(load_image(args.images / name).pixels, args.size) for name in names}
    chosen = lifted_names(protector, images)
    if not chosen:
        parser.error(f"the minimum energy lifts none of the {len(names)} held-out images")
    batch = torch.cat([images[name] for name in chosen])
    harness = Harness(protector.autoencoder, protector.perceptual, protector.target_images)
    targets = torch.full((len(batch),), TARGET_NAMES.index("mid"), dtype=torch.long)
    print(f"{len(chosen)} of {len(names)} held-out images lifted: {', '.join(chosen)}")
    rows = {}
    for label, block in VARIANTS.items():
        protected = protect_all(generator_variant(protector, fill_block=block), batch, eta_from_levels(8))[0]
        damage = harness.efficacy(batch, protected, targets)["damage"]
        after = {offset: harness.efficacy(batch, shifted_jpeg(protected, args.quality, offset), targets,
                                          seen_clean=shifted_jpeg(batch, args.quality, offset))["damage"]
                 for offset in args.offsets}
        half = harness.efficacy(batch, half_then_jpeg(protected, args.quality), targets,
                                seen_clean=half_then_jpeg(batch, args.quality))["damage"]
        rows[label] = {"damage": [round(float(v), 6) for v in damage], "half_then_jpeg": [round(float(v), 6) for v in half],
                       "survives_half_then_jpeg": float(half.mean() / damage.mean().clamp_min(1e-6)),
                       "after": {str(k): [round(float(v), 6) for v in v_] for k, v_ in after.items()},
                       "survives": {str(k): float(v_.mean() / damage.mean().clamp_min(1e-6)) for k, v_ in after.items()}}
        shifted = [rows[label]["survives"][str(k)] for k in args.offsets if k % 8]
        print(f"{label}: damage {float(damage.mean()):.4f}; after JPEG q{args.quality} "
              + " · ".join(f"{k} px {rows[label]['survives'][str(k)]:.0%}" for k in args.offsets)
              + (f"; shifted mean {sum(shifted) / len(shifted):.0%}" if shifted else "")
              + f"; half size then JPEG {rows[label]['survives_half_then_jpeg']:.0%}", flush=True)
    info = machine_info("cpu")
    write_json(args.out, {"machine": info, "images": chosen, "size": args.size, "quality": args.quality, "rows": rows})
    print(f"\n{machine_line(info)}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
