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

from .argparsing import OneLineArgumentParser
from .bundle import BUNDLED_METHODS
from .vocabulary import (
    AUTOENCODER_KINDS, DEFAULT_ETA_LEVELS, MAX_ETA_LEVELS, MAX_REFINE_STEPS, TARGET_CHOICES, check_min_energy, check_refine_steps, eta_from_levels, is_image_name,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m fastprotect", description="Protect images against diffusion-model mimicry.")
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--recursive", action="store_true", help="search folders recursively")
    add_protection_options(parser)
    parser.add_argument("--report", type=Path, default=None, help="write a JSON report of every file here")
    return parser


def add_protection_options(parser: argparse.ArgumentParser) -> None:
    """The protection settings, shared with ``python -m fastprotect.cluster`` so both read them alike."""
    parser.add_argument("--eta", type=float, default=float(DEFAULT_ETA_LEVELS),
                        help=f"L∞ budget in 8-bit levels, 1–{MAX_ETA_LEVELS} (default {DEFAULT_ETA_LEVELS} = {DEFAULT_ETA_LEVELS}/255)")
    parser.add_argument("--target", choices=TARGET_CHOICES, default="auto")
    parser.add_argument("--no-adaptive-strength", dest="adaptive_strength", action="store_false")
    parser.add_argument("--refine-steps", type=int, default=0, help=f"extra PGD steps after the pre-trained step, 0–{MAX_REFINE_STEPS}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=BUNDLED_METHODS, default=None,
                        help="a bundled checkpoint by method: generator (the default one) or mixture (the paper's method)")
    parser.add_argument("--checkpoint", default=None,
                        help="generator or mixture checkpoint: Hub id or folder (default: FASTPROTECT_CHECKPOINT, else the bundled generator)")
    parser.add_argument("--per-image", action="store_true", help="ignore any checkpoint and run per-image PGD")
    parser.add_argument("--encoder-kind", choices=AUTOENCODER_KINDS, default=None, help="encoder for per-image mode")
    parser.add_argument("--encoder-source", default=None, help="local folder/file or Hub id of the encoder weights")
    parser.add_argument("--lpips-backbone", default=None, help="local LPIPS backbone file (offline machines)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (the GPU when there is one)")
    parser.add_argument("--half", action="store_true", help="run the networks in float16 (GPU only: halves memory and time)")
    parser.add_argument("--max-pixels", type=int, default=None, help="refuse images with more pixels than this")
    parser.add_argument("--min-energy", type=float, default=None, metavar="LEVELS",
                        help="generator only: lift images whose protection stays below this RMS (levels at η 8; default: the "
                             "checkpoint's, 2.5 for the bundled generator; 0 = off) — protects flat-colour images, blue-yellow only, "
                             "with a faint colour pattern on their flat areas")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_protection_options(parser, args)
    if args.output.exists() and not args.output.is_dir():
        parser.error(f"-o/--output {str(args.output)!r} is an existing file; give a folder")
    return args


def check_protection_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse out-of-range settings through ``parser.error`` (one line, exit 2) before any weights load."""
    try:
        eta_from_levels(args.eta)
        check_refine_steps(args.refine_steps)
    except ValueError as error:
        parser.error(f"--eta / --refine-steps: {error}")
    if sum(map(bool, (args.per_image, args.checkpoint, args.method))) > 1:
        parser.error("--per-image, --checkpoint and --method exclude each other")
    if args.min_energy is not None and (args.per_image or args.method == "mixture"):
        parser.error("--min-energy applies to the generator method only")
    if args.min_energy is not None:
        try:
            check_min_energy(args.min_energy)
        except ValueError as error:
            parser.error(f"--min-energy: {error}")
    if args.method:  # a bundled checkpoint, found in a checkout or in the installed package
        from .bundle import bundled_checkpoint_for

        args.checkpoint = str(bundled_checkpoint_for(args.method))
    if args.device == "auto":  # the GPU when there is one
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.half and not args.device.startswith("cuda"):
        parser.error("--half needs --device cuda (float16 convolutions are slow or missing on CPUs)")
    device_problem = _device_problem(args.device)
    if device_problem:
        parser.error(f"--device {args.device!r}: {device_problem}")


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here, or None. Checked before any model loads."""
    import torch  # the parser itself stays importable without torch's start-up cost

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return "not a device name (use cpu, cuda or cuda:N)"
    if parsed.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    if parsed.type not in ("cpu", "cuda", "mps"):
        return "only cpu, cuda and mps are supported"
    return None


def collect_inputs(inputs: Sequence[Path], recursive: bool) -> list[Path]:
    """Files named directly are always taken (so a bad one gets reported); folders give images by suffix."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            files.extend(sorted(p for p in item.glob(pattern) if p.is_file() and is_image_name(p.name)))
        else:
            files.append(item)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from .hub import WeightsUnavailableError
    from .images import ImageError, load_image, save_png, unique_stem
    import torch

    from .protect import Protector

    files = collect_inputs(args.inputs, args.recursive)
    if not files:
        print("error: no input images found", file=sys.stderr)
        return 2
    try:
        protector = Protector.from_pretrained(
            args.checkpoint, per_image=args.per_image, encoder_kind=args.encoder_kind,
            encoder_source=args.encoder_source, lpips_backbone=args.lpips_backbone, device=args.device,
            dtype=torch.float16 if args.half else torch.float32, min_energy=args.min_energy,
        )
    except (WeightsUnavailableError, ValueError) as error:
        print(f"error: {_first_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # e.g. a weights path that holds something else: one line, exit 2
        print(f"error: could not load the models ({type(error).__name__}: {_first_line(error)})", file=sys.stderr)
        return 2
    for note in protector.notes:
        print(f"note: {note}", file=sys.stderr)
    args.output.mkdir(parents=True, exist_ok=True)
    report, failed, used = [], 0, set()
    for path in tqdm(files, desc="protecting", unit="image"):
        try:
            loaded = load_image(path, max_pixels=args.max_pixels)
            result = protector.protect(
                loaded, eta=eta_from_levels(args.eta), target=args.target, adaptive_strength=args.adaptive_strength,
                refine_steps=args.refine_steps, seed=args.seed,
            )
            destination = args.output / f"{unique_stem(loaded.name, used)}_protected.png"
            save_png(loaded, result.image, destination)
            report.append({"input": str(path), "output": str(destination), "ok": True, **result.info.as_dict()})
        except (ImageError, OSError, ValueError) as error:
            failed += 1
            message = _first_line(error)
            tqdm.write(f"skipped {path}: {message}", file=sys.stderr)
            report.append({"input": str(path), "ok": False, "error": message})
    if args.report:
        args.report.write_text(json.dumps(report, indent=2, default=str))
    print(f"{len(files) - failed} protected, {failed} failed -> {args.output}")
    return 1 if failed else 0


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
