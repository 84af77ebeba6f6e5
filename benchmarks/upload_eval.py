"""Protection as people use it: whole images at upload size through the public API (issue 29, item 1).

    python -m benchmarks.upload_eval [--sizes 512 1024 2048] [--per-domain 8] [--seed 0] \
        [--variant LABEL=field=value,field=value ...] [--compare LABEL=FOLDER ...] [--pgd] [--out FILE]

Each sampled image of the dev folder (``--images``, four domains; ``--per-domain`` of each, drawn with ``--seed``, the
same draw for every size and row) is brought *whole* to long side 512, 1024 and 2048 px (no centre crop; bilinear,
rounded to 8 bits like a saved upload) and protected by ``Protector.from_pretrained()`` + ``Protector.protect`` with no
options, as the CLI does (``compute_metrics=False``: the metrics do not change the image). The dev images have a long
side ≤ 768 px, so the 1024 and 2048 px copies are *upscaled*: smoother than a camera's upload of that size.

Per image and row, through ``benchmarks.noise_control.measure_per_image`` (``fastprotect.evaluation``'s harness, the
definitions of every other table): LPIPS-alex, LPIPS-VGG, PSNR, flat-region ratio, mimic damage through TAEF2, the damage
of random noise of the same PSNR (``matched_noise``), and at ``--robust-sizes`` the damage left after JPEG q75 and
resize-half. Summaries: per domain and pooled (ratio = mean damage ÷ mean noise damage, as noise_control), each image's
ratio where noise's damage is measurable (> 0.002), the share of those at ≥ 2× and the worst decile.
The issue's done-when bars (``BARS``) are marked met / not met at 512 px, and every other size's ratios against 512's.

Rows: ``default`` (the bundled checkpoint, or ``--checkpoint``); ``--variant`` rows are the same weights under other
config fields (``PerturbationGenerator.with_config``: operating resolution, budget); ``--compare`` rows other checkpoint
folders; ``--pgd``: per-image PGD (8 steps at η 8, benchmarks.noise_control's reference). The old protocol (256² centre
crops, ``python -m benchmarks.noise_control``) stays as the *fast development check*; this is the headline.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import DEFAULT_IMAGES, DEFAULT_WEIGHTS, machine_info, machine_line, write_json
from benchmarks.noise_control import DOMAINS, ROBUSTNESS, generator_variant, measure_per_image, per_image_pgd, same_energy_noise
from fastprotect.argparsing import field_values
from fastprotect.evaluation import Harness
from fastprotect.images import load_image, resize_tensor
from fastprotect.perceptual import load_perceptual
from fastprotect.protect import Protector
from fastprotect.vocabulary import TARGET_NAMES, eta_from_levels, is_image_name

SIZES = (512, 1024, 2048)
BAR_SIZE = 512  # the size the bars are stated at
MEASURABLE = 0.002  # noise damage below this is within the measure's spread: no per-image ratio (noise_control's bar)
SIZE_TOLERANCE = 0.20  # "each within 20 % of the 512 px ratios"
DEFAULT_OUT = Path("benchmarks/results/upload_eval.json")


@dataclass(frozen=True)
class Bar:
    """One done-when line of issue 29: ``key`` of a row's summary compared with ``limit`` (``at_least`` or at most)."""

    name: str
    key: str
    limit: float
    at_least: bool

    def met(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit


BARS = (
    Bar("LPIPS-alex ≤ 0.06", "lpips", 0.06, False),
    Bar("LPIPS-VGG ≤ 0.15", "lpips_vgg", 0.15, False),
    Bar("PSNR ≥ 35 dB", "psnr", 35.0, True),
    Bar("flat-region ratio ≤ 0.5", "flat_ratio", 0.5, False),
    Bar("damage ≥ 0.06", "damage", 0.06, True),
    Bar("ratio to noise ≥ 2.5× pooled", "ratio", 2.5, True),
    Bar("ratio ≥ 2× in every domain", "min_domain_ratio", 2.0, True),
    Bar("≥ 90 % of images ≥ 2× noise", "share_at_2x", 0.9, True),
    Bar("≥ 70 % survives JPEG q75", "survives_jpeg75", 0.7, True),
    Bar("≥ 70 % survives resize-half", "survives_resize-half", 0.7, True),
)


# ------------------------------------------------------------------------------------------- images
def sample_names(images: Path, per_domain: int | None, seed: int) -> list[str]:
    """``per_domain`` names of each domain drawn with ``seed`` (all of them when None), in name order within a domain."""
    draw = random.Random(seed)
    names = []
    for domain in DOMAINS:
        folder = images / domain
        listed = sorted(p.name for p in folder.iterdir() if is_image_name(p.name)) if folder.is_dir() else []
        chosen = listed if per_domain is None or per_domain >= len(listed) else sorted(draw.sample(listed, per_domain))
        names.extend(f"{domain}/{name}" for name in chosen)
    return names


def interleave(names: list[str]) -> list[str]:
    """The names taken one domain at a time in turn (cartoon, face, object, painting, cartoon, ...): a run cut short
    has measured every domain alike."""
    by_domain = [[n for n in names if n.split("/")[0] == d] for d in DOMAINS]
    return [group[i] for i in range(max(map(len, by_domain), default=0)) for group in by_domain if i < len(group)]


def at_long_side(pixels: torch.Tensor, long_side: int) -> torch.Tensor:
    """The whole image scaled (up or down) to ``long_side``, aspect kept, rounded to 8 bits like a saved upload."""
    height, width = pixels.shape[-2:]
    scale = long_side / max(height, width)
    size = max(8, round(height * scale)), max(8, round(width * scale))
    return (resize_tensor(pixels, *size).clamp(0, 1) * 255).round() / 255


# ------------------------------------------------------------------------------------------- transfer
TRANSFER_NETS = ("alex", "vgg")


@torch.no_grad()
def feature_shift(perceptual, changed: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """How far a change moves an ImageNet network's features: the mean over the LPIPS trunk's layers (AlexNet: 5, VGG16:
    5 stages) of ‖F(changed) − F(clean)‖ / ‖F(clean)‖, per image (B). The trunks are torchvision's ImageNet classifiers,
    never trained on or distilled from TAEF2: a transfer check, unlike benchmarks.surrogate_encoder (distilled from TAEF2)."""
    model = perceptual.model
    ours = model.net(model.scaling_layer(changed.to(model.scaling_layer.shift.dtype) * 2 - 1))
    theirs = model.net(model.scaling_layer(clean.to(model.scaling_layer.shift.dtype) * 2 - 1))
    shifts = [(a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1).clamp_min(1e-12) for a, b in zip(ours, theirs, strict=True)]
    return torch.stack(shifts).mean(0).float().cpu()


# ------------------------------------------------------------------------------------------- summary
def summarise(per_image: dict[str, list[float]], domains: list[str]) -> dict[str, dict[str, float]]:
    """Per domain and pooled ("all"): means, ratio of mean damage to mean noise damage, survival shares, and over the
    images whose noise damage is measurable: how many, the share at ≥ 2× noise, the worst decile of their ratios."""
    out: dict[str, dict[str, float]] = {}
    for domain in [d for d in DOMAINS if d in domains] + ["all"]:
        index = [i for i, d in enumerate(domains) if domain in ("all", d)]
        values = {key: sum(series[i] for i in index) / len(index) for key, series in per_image.items()}
        values["ratio"] = values["damage"] / max(values["noise_damage"], 1e-6)
        for name in ROBUSTNESS:
            if f"damage_{name}" in values:
                values[f"survives_{name}"] = values[f"damage_{name}"] / max(values["damage"], 1e-6)
        for net in TRANSFER_NETS:
            if f"shift_{net}" in values:
                values[f"transfer_{net}"] = values[f"shift_{net}"] / max(values[f"noise_shift_{net}"], 1e-12)
        ratios = sorted(per_image["damage"][i] / per_image["noise_damage"][i] for i in index if per_image["noise_damage"][i] > MEASURABLE)
        values["measurable"] = len(ratios)
        if ratios:
            decile = ratios[: max(1, round(len(ratios) / 10))]
            values["share_at_2x"] = sum(r >= 2 for r in ratios) / len(ratios)
            values["worst_decile_mean"] = sum(decile) / len(decile)
            values["min_ratio"] = ratios[0]
        values["n"] = len(index)
        out[domain] = values
    out["all"]["min_domain_ratio"] = min(out[d]["ratio"] for d in out if d != "all")
    return out


def check_bars(summary: dict[str, dict[str, float]]) -> list[tuple[str, float | None, bool | None]]:
    """(bar, pooled value, met) for every BARS line; None where the run did not measure it."""
    pooled = summary["all"]
    return [(bar.name, pooled.get(bar.key), None if bar.key not in pooled else bar.met(pooled[bar.key])) for bar in BARS]


def size_consistency(by_size: dict[int, dict], reference: int = BAR_SIZE) -> list[tuple[int, str, float, bool]]:
    """(size, domain, ratio ÷ the reference size's ratio, within SIZE_TOLERANCE) for every other size and domain."""
    if reference not in by_size:
        return []
    base = by_size[reference]["summary"]
    out = []
    for size, entry in sorted(by_size.items()):
        if size == reference:
            continue
        for domain, values in entry["summary"].items():
            if domain in base and base[domain]["ratio"] > 0:
                share = values["ratio"] / base[domain]["ratio"]
                out.append((size, domain, share, abs(share - 1) <= SIZE_TOLERANCE))
    return out


# ------------------------------------------------------------------------------------------- table
def mark(met: bool | None) -> str:
    return "–" if met is None else "met" if met else "**not met**"


def row_line(label: str, size: int, summary: dict[str, dict[str, float]], seconds: float) -> str:
    pooled = summary["all"]
    domains = " · ".join(f"{d} {summary[d]['ratio']:.2f}" for d in DOMAINS if d in summary)
    survives = " · ".join(f"{pooled[f'survives_{n}']:.0%}" for n in ROBUSTNESS if f"survives_{n}" in pooled) or "–"
    share = f"{pooled['share_at_2x']:.0%} of {pooled['measurable']}" if "share_at_2x" in pooled else "–"
    worst = f"{pooled['worst_decile_mean']:.2f}" if "worst_decile_mean" in pooled else "–"
    transfer = " · ".join(f"{net} {pooled[f'transfer_{net}']:.2f}×" for net in TRANSFER_NETS if f"transfer_{net}" in pooled)
    label = f"{label} (ImageNet feature shift vs noise: {transfer})" if transfer else label
    return (f"| {label} | {size} | {pooled['n']} | {pooled['lpips']:.3f} | {pooled['lpips_vgg']:.3f} | {pooled['psnr']:.1f} "
            f"| {pooled['flat_ratio']:.2f} | {pooled['damage']:.4f} | {pooled['noise_damage']:.4f} | **{pooled['ratio']:.2f}** "
            f"| {domains} | {share} | {worst} | {survives} | {seconds:.2f} |")


HEADER = ("| row | long side | images | LPIPS-alex | LPIPS-VGG | PSNR dB | flat ratio | damage | noise damage (same PSNR) | ratio "
          "| ratio per domain | images ≥ 2× noise | worst decile ratio | survives JPEG75 · resize-half | s / image (protect) |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def report(rows: dict[str, dict[int, dict]]) -> str:
    lines = [HEADER]
    for label, by_size in rows.items():
        for size, entry in sorted(by_size.items()):
            lines.append(row_line(label, size, entry["summary"], entry["seconds_per_image"]))
    for label, by_size in rows.items():
        if BAR_SIZE in by_size:
            bars = check_bars(by_size[BAR_SIZE]["summary"])
            lines.append(f"\n{label} at {BAR_SIZE} px: " + " · ".join(
                f"{name} {'–' if value is None else f'{value:.3g}'} {mark(met)}" for name, value, met in bars))
        consistency = size_consistency(by_size)
        if consistency:
            lines.append(f"{label}, ratio ÷ the {BAR_SIZE} px ratio: " + " · ".join(
                f"{size} {domain} {share:.2f} {mark(ok)}" for size, domain, share, ok in consistency))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- rows
def parse_variant(text: str) -> tuple[str, dict]:
    """'LABEL=field=value,field=value' -> (LABEL, {field: value}) (fastprotect.argparsing.field_values)."""
    label, _, rest = text.partition("=")
    try:
        changes = field_values(rest)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected LABEL=field=value[,field=value], got {text!r}") from None
    if not label or not changes:
        raise argparse.ArgumentTypeError(f"expected LABEL=field=value[,field=value], got {text!r}")
    return label, changes


def parse_compare(text: str) -> tuple[str, Path]:
    label, _, folder = text.partition("=")
    if not label or not folder:
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER, got {text!r}")
    return label, Path(folder)


def build_rows(args: argparse.Namespace) -> dict[str, Protector]:
    """Every row's Protector, loaded before the first image so that a bad folder or field fails in seconds."""
    default = Protector.from_pretrained(args.checkpoint)
    rows = {"default": default}
    for label, changes in args.variant:
        rows[label] = generator_variant(default, **changes)
    for label, folder in args.compare:
        rows[label] = Protector.from_pretrained(folder)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upload_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="long sides the whole images are brought to")
    parser.add_argument("--per-domain", type=int, default=None, help="images drawn per domain (seeded; default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--robust-sizes", type=int, nargs="*", default=[BAR_SIZE], help="sizes that also measure JPEG q75 / resize-half")
    parser.add_argument("--checkpoint", default=None, help="the default row's checkpoint (default: what the CLI loads)")
    parser.add_argument("--variant", type=parse_variant, nargs="*", default=[], metavar="LABEL=field=value,...")
    parser.add_argument("--compare", type=parse_compare, nargs="*", default=[], metavar="LABEL=FOLDER")
    parser.add_argument("--no-default", action="store_true", help="leave the default row out (its numbers are in another file)")
    parser.add_argument("--pgd", action="store_true", help="add per-image PGD (8 steps, η 8) rows: slow")
    parser.add_argument("--transfer", action="store_true",
                        help="also the ImageNet AlexNet/VGG16 feature shift of each row and of its same-PSNR noise (feature_shift)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    names = interleave(sample_names(args.images, args.per_domain, args.seed))
    if not names:
        parser.error(f"no images under {args.images}/{{{','.join(DOMAINS)}}}")
    domains = [name.split("/")[0] for name in names]
    protectors = build_rows(args)
    default = protectors["default"]
    if args.no_default:
        del protectors["default"]
    vgg = load_perceptual("vgg", args.weights / "vgg16_lpips_features.safetensors")
    harness = Harness(default.autoencoder, default.perceptual, default.target_images, perceptual_vgg=vgg, extended=True)
    targets = torch.tensor([TARGET_NAMES.index("mid")])  # the damage does not depend on it
    labels = list(protectors) + (["per-image PGD, 8 steps, η 8"] if args.pgd else [])
    collected = {label: {size: {"per_image": {}, "seconds": []} for size in args.sizes} for label in labels}
    info = machine_info("cpu")

    for size in args.sizes:
        for index, name in enumerate(names):
            x = at_long_side(load_image(args.images / name).pixels, size)
            for label in labels:
                tick = time.perf_counter()
                if label in protectors:
                    protected = protectors[label].protect(x, compute_metrics=False).image
                else:
                    protected = per_image_pgd(default, x, eta_from_levels(8))[0]
                entry = collected[label][size]
                entry["seconds"].append(time.perf_counter() - tick)
                measured = measure_per_image(harness, x, protected, targets, robust=size in args.robust_sizes)
                if args.transfer:
                    noise = same_energy_noise(x, protected)  # seeded: the control measure_per_image scored
                    for net, perceptual in (("alex", default.perceptual), ("vgg", vgg)):
                        measured[f"shift_{net}"] = feature_shift(perceptual, protected, x)
                        measured[f"noise_shift_{net}"] = feature_shift(perceptual, noise, x)
                for key, value in measured.items():
                    entry["per_image"].setdefault(key, []).append(round(float(value[0]), 6))
                print(f"{size} px {index + 1}/{len(names)} {name} {label}: damage {float(measured['damage'][0]):.4f} "
                      f"noise {float(measured['noise_damage'][0]):.4f} alex {float(measured['lpips'][0]):.3f}", file=sys.stderr, flush=True)
            harness._references.clear()  # one image's reference at a time: a 2048 px round trip is large
            # written after every image: a run cut short keeps what it measured (summaries of the images so far)
            write_results(args, info, names, domains, collected, started, partial=True)
    rows = write_results(args, info, names, domains, collected, started, partial=False)
    print(report(rows))
    print(f"\n{machine_line(info)}; {len(names)} dev images ({args.per_domain or 'all'} per domain, seed {args.seed}), whole, "
          f"at long side {', '.join(map(str, args.sizes))} px (sources ≤ 768 px: larger sizes are upscaled); "
          f"JSON: {args.out}; wall {time.perf_counter() - started:.0f} s")
    return 0


def write_results(args, info, names, domains, collected, started, *, partial: bool) -> dict[str, dict[int, dict]]:
    """Summaries of what is measured so far, written with every per-image value (written after each size)."""
    rows: dict[str, dict[int, dict]] = {}
    for label, by_size in collected.items():
        for size, entry in by_size.items():
            done = len(entry["seconds"])
            if done:
                rows.setdefault(label, {})[size] = {
                    "images_done": done,
                    "summary": summarise(entry["per_image"], domains[:done]),
                    "seconds_per_image": sum(entry["seconds"]) / len(entry["seconds"]),
                    "per_image": entry["per_image"],
                }
    checks = {label: {"bars_at_512": check_bars(by_size[BAR_SIZE]["summary"]) if BAR_SIZE in by_size else [],
                      "ratio_vs_512": size_consistency(by_size)} for label, by_size in rows.items()}
    write_json(args.out, {"command": "python -m benchmarks.upload_eval " + " ".join(sys.argv[1:]), "machine": info,
                          "images": names, "per_domain": args.per_domain, "seed": args.seed, "partial": partial,
                          "note": "whole dev images at long side N (sources ≤ 768 px: 1024/2048 are upscaled), protected through "
                                  "Protector.from_pretrained() + protect() with no options; damage through TAEF2",
                          "rows": rows, "checks": checks, "wall_s": time.perf_counter() - started})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
