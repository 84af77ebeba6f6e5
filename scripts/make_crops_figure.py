"""100 % crops, clean vs protected, for the docs (issue 10: "a flat sky, a face and a cartoon").

    python -m scripts.make_crops_figure --images ../shared/data/images \
        --pick painting/painting_099.jpg:flat face/face_046.jpg:centre cartoon/cartoon_042.jpg:centre

Each picked image is protected whole, at its own resolution (long side capped at ``--max-side``, as
a platform would serve it), by the bundled generator (the default) and the bundled mixture, both at
η 8; a ``--crop``² window is then cut at 1:1 pixels: ``flat`` = the window of lowest mean local
contrast (a sky), ``centre`` = the middle. Columns: clean · generator · mixture · each method's
change ×8 around grey. Nearest-neighbour ×2 enlargement so that single pixels stay visible.
Writes ``--output`` (PNG) and prints the per-crop PSNR of every method.

``--pgd N`` puts per-image PGD at η N (8 steps, TAEF2, benchmarks.noise_control's reference) in the mixture's place:
the comparison behind the frontier's one unmet reading. PGD at η 4 has the default's LPIPS-alex on the 16 evaluation
images (0.056 vs 0.057), so the two columns are "equally visible" by AlexNet; the crops let an eye judge that:

    python -m scripts.make_crops_figure --images ../shared/data/images --pgd 4 --output docs/images/crops_vs_pgd.png \
        --pick painting/painting_099.jpg:flat face/face_046.jpg:centre cartoon/cartoon_042.jpg:centre

``--rules field=value,...`` puts the default generator under those config fields (the same weights; issue 29's budget
rules, e.g. ``edge_suppression=0.8,chroma_reference=0.25``) in the third column, and ``--presets 4 8 12`` makes one row
per picked image and η (the Space's Light / Standard / Strong):

    python -m scripts.make_crops_figure --images ../shared/data/images --presets 4 8 12 \
        --rules edge_suppression=0.8,chroma_reference=0.25 --output docs/images/crops_budget_rules.png \
        --pick painting/painting_099.jpg:flat face/face_046.jpg:centre cartoon/cartoon_042.jpg:centre
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from benchmarks.noise_control import generator_variant, per_image_pgd
from fastprotect.argparsing import field_values
from fastprotect.bundle import bundled_checkpoint_for
from fastprotect.evaluation import local_contrast
from fastprotect.images import fit_within, load_image, resize_tensor
from fastprotect.metrics import psnr
from fastprotect.protect import Protector
from fastprotect.vocabulary import eta_from_levels


def pick_window(image: torch.Tensor, rule: str, crop: int) -> tuple[int, int]:
    """Top-left corner of the crop: the flattest window (``flat``) or the centre (``centre``)."""
    height, width = image.shape[-2:]
    if rule == "centre":
        return (height - crop) // 2, (width - crop) // 2
    contrast = local_contrast(image)[:, None]
    brightness = image.mean(1, keepdim=True)
    score = F.avg_pool2d(contrast, crop, stride=crop // 4)
    # skip windows that are nearly black or white: clipping hides any change there
    usable = F.avg_pool2d(((brightness > 0.08) & (brightness < 0.92)).float(), crop, stride=crop // 4) > 0.95
    score = torch.where(usable, score, torch.full_like(score, float("inf")))
    index = int(score.flatten().argmin())
    row, col = divmod(index, score.shape[-1])
    return row * (crop // 4), col * (crop // 4)


def to_pil(image: torch.Tensor, scale: int) -> Image.Image:
    array = (image[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(array)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.make_crops_figure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--pick", nargs="+", required=True, help="NAME:flat or NAME:centre")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument("--eta", type=int, default=8)
    parser.add_argument("--pgd", type=int, default=0, metavar="N",
                        help="per-image PGD at η N (8 steps) in the mixture's place (0: the mixture)")
    parser.add_argument("--presets", type=int, nargs="+", default=None, metavar="ETA",
                        help="one row per picked image and η (levels; default: --eta alone)")
    parser.add_argument("--rules", type=field_values, default=None, metavar="field=value,...",
                        help="the default generator under these config fields in the third column (same weights)")
    parser.add_argument("--output", type=Path, default=Path("docs/images/crops_100pct.png"))
    args = parser.parse_args(argv)
    methods = {name: Protector.from_pretrained(bundled_checkpoint_for(name)) for name in ("generator", "mixture")}
    if args.rules:
        methods["rules"] = generator_variant(methods["generator"], **args.rules)
    scale, gap, label_h = 2, 6, 18
    tile = args.crop * scale
    other = "with rules" if args.rules else f"PGD eta {args.pgd}" if args.pgd else "mixture"
    third = (f"generator + {','.join(f'{k}={v}' for k, v in args.rules.items())}" if args.rules
             else f"per-image PGD, eta {args.pgd}, 8 steps" if args.pgd else "mixture (paper)")
    columns = ["clean", "generator (default)", third[:48], "generator change x8", f"{other} change x8"]
    rows = []
    for pick, levels in [(pick, levels) for pick in args.pick for levels in (args.presets or [args.eta])]:
        eta = eta_from_levels(levels)
        name, rule = pick.rsplit(":", 1)
        image = load_image(args.images / name).pixels
        height, width = fit_within(*image.shape[-2:], args.max_side, min_side=args.crop)
        image = (resize_tensor(image, height, width).clamp(0, 1) * 255).round() / 255
        top, left = pick_window(image, rule, args.crop)
        window = (slice(None), slice(None), slice(top, top + args.crop), slice(left, left + args.crop))
        clean = image[window]
        protected = {"generator": methods["generator"].protect(image, eta=eta, compute_metrics=False).image[window]}
        if args.rules:
            protected[other] = methods["rules"].protect(image, eta=eta, compute_metrics=False).image[window]
        elif args.pgd:
            # the evaluation's PGD (seeded start, signed steps of η/4), on the mixture's TAEF2
            protected[other] = per_image_pgd(methods["mixture"], image, eta_from_levels(args.pgd))[0][window]
        else:
            protected[other] = methods["mixture"].protect(image, eta=eta, compute_metrics=False).image[window]
        line = f"{name} η {levels} ({rule}, {width}×{height}, crop at {left},{top}):"
        print(line, " · ".join(f"{m} PSNR {psnr(p, clean):.1f} dB" for m, p in protected.items()))
        changes = [0.5 + (protected[m] - clean) * 8 for m in ("generator", other)]
        rows.append((f"{name}, eta {levels}", [clean, protected["generator"], protected[other], *changes]))
    figure = Image.new("RGB", (len(columns) * (tile + gap) + gap, label_h + len(rows) * (tile + label_h + gap)), "white")
    draw = ImageDraw.Draw(figure)
    for c, title in enumerate(columns):
        draw.text((gap + c * (tile + gap), 3), title, fill="black")
    for r, (name, tiles) in enumerate(rows):
        y = label_h + r * (tile + label_h + gap)
        draw.text((gap, y + 2), f"{name}: 100 % crop, shown x{scale}", fill="black")
        for c, picture in enumerate(tiles):
            figure.paste(to_pil(picture, scale), (gap + c * (tile + gap), y + label_h))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
