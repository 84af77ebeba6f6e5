"""Command line: ``python -m fastprotect INPUT [INPUT ...] -o OUTPUT_DIR``.

Inputs are files or folders (searched for images, optionally recursively). Each image is written
as ``<name>_protected.png`` in the output folder. A bad file is reported and skipped; the exit
status is 0 when every file was protected, 1 when any failed, 2 for bad arguments or weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastprotect", description="Protect images against diffusion-model mimicry.")
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--recursive", action="store_true", help="search folders recursively")
    add_protection_options(parser)
    parser.add_argument("--report", type=Path, default=None, help="write a JSON report of every file here")
    return parser


def add_protection_options(parser: argparse.ArgumentParser) -> None:
    """The protection settings, shared with ``python -m fastprotect.cluster`` so both read them alike."""
    parser.add_argument("--eta", type=float, default=8.0, help="L∞ budget in 8-bit levels, 1–32 (default 8 = 8/255)")
    parser.add_argument("--target", choices=["auto", "low", "mid", "high"], default="auto")
    parser.add_argument("--no-adaptive-strength", dest="adaptive_strength", action="store_false")
    parser.add_argument("--refine-steps", type=int, default=0, help="extra PGD steps after the pre-trained step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="mixture checkpoint: Hub id or folder (default: FASTPROTECT_CHECKPOINT or the bundled one)")
    parser.add_argument("--per-image", action="store_true", help="ignore any checkpoint and run per-image PGD")
    parser.add_argument("--encoder-kind", choices=["sd-vae", "taesd", "taef2"], default=None, help="encoder for per-image mode")
    parser.add_argument("--encoder-source", default=None, help="local folder/file or Hub id of the encoder weights")
    parser.add_argument("--lpips-backbone", default=None, help="local LPIPS backbone file (offline machines)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-pixels", type=int, default=None, help="refuse images with more pixels than this")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_protection_options(parser, args)
    return args


def check_protection_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse out-of-range settings through ``parser.error`` (exit 2) before any weights load."""
    if not 1 <= args.eta <= 32:
        parser.error("--eta is in 8-bit levels and must be between 1 and 32")
    if args.refine_steps < 0:
        parser.error("--refine-steps must be >= 0")
    if args.per_image and args.checkpoint:
        parser.error("--per-image and --checkpoint exclude each other")


def collect_inputs(inputs: Sequence[Path], recursive: bool) -> list[Path]:
    """Files named directly are always taken (so a bad one gets reported); folders give images by suffix."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            files.extend(sorted(p for p in item.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(item)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from .hub import WeightsUnavailableError
    from .images import ImageError, load_image, save_png, unique_stem
    from .protect import DEFAULT_CHECKPOINT, Protector

    files = collect_inputs(args.inputs, args.recursive)
    if not files:
        print("error: no input images found", file=sys.stderr)
        return 2
    try:
        protector = Protector.from_pretrained(
            None if args.per_image else (args.checkpoint or DEFAULT_CHECKPOINT),
            encoder_kind=args.encoder_kind, encoder_source=args.encoder_source,
            lpips_backbone=args.lpips_backbone, device=args.device,
        )
    except (WeightsUnavailableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in protector.notes:
        print(f"note: {note}", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    report, failed, used = [], 0, set()
    for path in tqdm(files, desc="protecting", unit="image"):
        try:
            loaded = load_image(path, max_pixels=args.max_pixels)
            result = protector.protect(
                loaded, eta=args.eta / 255, target=args.target, adaptive_strength=args.adaptive_strength,
                refine_steps=args.refine_steps, seed=args.seed,
            )
            destination = args.output / f"{unique_stem(loaded.name, used)}_protected.png"
            save_png(loaded, result.image, destination)
            report.append({"input": str(path), "output": str(destination), "ok": True, **result.info.as_dict()})
        except (ImageError, OSError, ValueError) as error:
            failed += 1
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            tqdm.write(f"skipped {path}: {message}", file=sys.stderr)
            report.append({"input": str(path), "ok": False, "error": message})
    if args.report:
        args.report.write_text(json.dumps(report, indent=2, default=str))
    print(f"{len(files) - failed} protected, {failed} failed -> {args.output}")
    return 1 if failed else 0

