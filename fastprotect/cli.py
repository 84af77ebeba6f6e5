"""Command line: ``python -m fastprotect INPUT [INPUT ...] -o OUTPUT_DIR``.

Inputs are files or folders (searched for images, optionally recursively). Each image is written
as ``<name>_protected.png`` in the output folder (names: :func:`fastprotect.outputs.output_names`,
shared with the Ray job), under a temporary name first and renamed when complete, so an
interrupted run never leaves a truncated PNG under its final name. Every bad path or option is one
line and exit status 2 before any model loads. A bad file is reported and skipped, and so is every
folder entry that is not an image; the exit status is 0 when every image was protected, 1 when any
failed, 2 for bad arguments or weights.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .argparsing import OneLineArgumentParser
from .bundle import BUNDLED_METHODS
from .vocabulary import (
    AUTOENCODER_KINDS, DEFAULT_ETA_LEVELS, MAX_ETA_LEVELS, MAX_REFINE_STEPS, TARGET_CHOICES, check_min_energy, check_refine_steps, eta_from_levels, is_image_name,
)

MAX_PIXELS_ENV = "FASTPROTECT_MAX_PIXELS"  # the same name as fastprotect.images.MAX_PIXELS_ENV (not imported: torch)
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m fastprotect", description="Protect images against diffusion-model mimicry.")
    parser.add_argument("inputs", nargs="+", type=path_argument, help="image files or folders")
    parser.add_argument("-o", "--output", type=path_argument, required=True, help="output folder (created if missing)")
    parser.add_argument("--recursive", action="store_true", help="search folders recursively")
    add_protection_options(parser)
    parser.add_argument("--report", type=path_argument, default=None,
                        help="write a JSON report of every file here (its folder must exist)")
    return parser


def path_argument(text: str) -> Path:
    """A path argument; an empty one is refused (``Path("")`` would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


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
    """Parse and check every argument; any problem is ``parser.error`` (one line, exit 2) before any work."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_paths(parser, args)
    check_protection_options(parser, args)
    return args


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Inputs exist, the output folder and the report can be written: checked before any model loads,
    so a typo never costs a model load and no image is protected only to fail when the report is saved."""
    from .outputs import folder_problem

    for item in args.inputs:
        if item.is_symlink() and not item.exists():
            parser.error(f"input {str(item)!r} is a broken symbolic link (its target is missing)")
        if not item.exists():
            parser.error(f"input {str(item)!r} not found")
    if args.output.exists() and not args.output.is_dir():
        parser.error(f"-o/--output {str(args.output)!r} is an existing file; give a folder")
    problem = folder_problem(args.output)
    if problem:
        parser.error(f"-o/--output {str(args.output)!r}: {problem}")
    if args.report is not None:
        report = args.report
        if report.is_dir():
            parser.error(f"--report {str(report)!r}: give a file name for the JSON report, not a folder")
        if any(report.resolve() == item.resolve() for item in args.inputs):  # it would replace an original
            parser.error(f"--report {str(report)!r} is one of the inputs; give another file name")
        folder = report.parent
        if not folder.is_dir():  # the report's folder is not created: a missing one is most likely a typo
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            parser.error(f"--report {str(report)!r}: {str(folder)!r} {what}")
        problem = folder_problem(folder)
        if problem:
            parser.error(f"--report {str(report)!r}: {problem}")


def check_protection_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse out-of-range settings through ``parser.error`` (one line, exit 2) before any weights load."""
    try:
        eta_from_levels(args.eta)
        check_refine_steps(args.refine_steps)
    except ValueError as error:
        parser.error(f"--eta / --refine-steps: {error}")
    if sum(map(bool, (args.per_image, args.checkpoint, args.method))) > 1:
        parser.error("--per-image, --checkpoint and --method exclude each other")
    if args.encoder_kind is not None and not args.per_image:  # a checkpoint names its own encoder kind
        parser.error("--encoder-kind applies to --per-image only (a checkpoint names its own encoder)")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        parser.error(f"--seed must be a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]} (64 bits); got {args.seed}")
    check_max_pixels(parser, args.max_pixels)
    for flag, value in (("--checkpoint", args.checkpoint), ("--encoder-source", args.encoder_source),
                        ("--lpips-backbone", args.lpips_backbone)):
        problem = _local_path_problem(value)
        if problem:
            parser.error(f"{flag} {value!r}: {problem}")
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


def check_max_pixels(parser: argparse.ArgumentParser, max_pixels: int | None) -> None:
    """``--max-pixels`` (or, without it, ``$FASTPROTECT_MAX_PIXELS``) is a positive whole number:
    refused here, not as a failure of every image after the models loaded."""
    from . import environment

    if max_pixels is not None and max_pixels < 1:
        parser.error(f"--max-pixels must be a positive number of pixels (width × height); got {max_pixels}")
    if max_pixels is None:
        try:
            environment.get_int(MAX_PIXELS_ENV, 1)
        except ValueError as error:
            parser.error(str(error))


def _local_path_problem(value: str | None) -> str | None:
    """Why a weights argument that can only be a local path (absolute, ``./``, ``../``, ``~``) is unusable,
    or None. Anything else may be a Hub id (``owner/name``) and is left to the loader."""
    if not value or not value.startswith(("/", "./", "../", "~", ".\\", "..\\")) and not os.path.isabs(value):
        return None
    path = Path(value).expanduser()
    if path.is_symlink() and not path.exists():
        return "a broken symbolic link"
    return None if path.exists() else "no such file or folder"


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


@dataclass
class Inputs:
    """What the command line will protect, and what it passes over (each reported, never silently)."""

    files: list[Path] = field(default_factory=list)  # named directly, or found in a folder by image suffix
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (folder entry, why it is not an input)


def collect_inputs(inputs: Sequence[Path], recursive: bool, output: Path | None = None) -> Inputs:
    """Files named directly are always taken (so a bad one gets reported); folders give images by
    suffix, and every other entry of a folder is a skip with its reason (a broken link, a text file,
    a subfolder without ``--recursive``, a ``*_protected.png`` already in ``output``, a file already
    listed). Our own temporaries (a run still writing) are not entries."""
    from .outputs import OUTPUT_SUFFIX, is_temporary_name

    found = Inputs()
    seen: set[Path] = set()
    output_folder = output.resolve() if output is not None else None

    def take(path: Path) -> None:
        key = path.resolve()
        if key in seen:
            found.skipped.append((path, "listed twice (protected once)"))
        else:
            seen.add(key)
            found.files.append(path)

    for item in inputs:
        if not item.is_dir():
            take(item)
            continue
        for entry in sorted(item.glob("**/*" if recursive else "*")):
            if is_temporary_name(entry.name) or (recursive and entry.is_dir()):
                continue
            if entry.name.endswith(OUTPUT_SUFFIX) and entry.resolve().parent == output_folder:
                found.skipped.append((entry, "an earlier result in the output folder, not an original"))
            elif entry.is_dir():
                found.skipped.append((entry, "a folder (add --recursive to search it)"))
            elif is_image_name(entry.name):
                take(entry)
            elif entry.is_symlink() and not entry.exists():
                found.skipped.append((entry, "a broken symbolic link"))
            else:
                found.skipped.append((entry, "not an image by its name (image suffixes: .png, .jpg, .webp, …)"))
    return found


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` cannot even be opened as a file (checked before decoding), or None."""
    if path.is_symlink() and not path.exists():
        return "a broken symbolic link (its target is missing)"
    if not path.exists():
        return "file not found"
    if not path.is_file():
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    found = collect_inputs(args.inputs, args.recursive, args.output)
    files = found.files
    for path, reason in found.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not files:
        print("error: no input images found", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from .hub import WeightsUnavailableError
    from .images import ImageError, load_image, save_png
    from .outputs import output_names, remove_stale_temporaries, write_atomically
    import torch

    from .protect import Protector

    try:
        protector = Protector.from_pretrained(
            args.checkpoint, per_image=args.per_image, encoder_kind=args.encoder_kind,
            encoder_source=args.encoder_source, lpips_backbone=args.lpips_backbone, device=args.device,
            dtype=torch.float16 if args.half else torch.float32, min_energy=args.min_energy,
            with_lpips=True if args.report else None,  # without a report, LPIPS only where the method protects with it
        )
    except (WeightsUnavailableError, ValueError) as error:
        print(f"error: {_first_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # e.g. a weights path that holds something else: one line, exit 2
        print(f"error: could not load the models ({type(error).__name__}: {_first_line(error)})", file=sys.stderr)
        return 2
    for note in protector.notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # checked at start; only a change since then gets here
        print(f"error: cannot create -o/--output {str(args.output)!r}: {_describe(error)}", file=sys.stderr)
        return 2
    removed = remove_stale_temporaries(args.output)
    if removed:
        print(f"note: removed {removed} half-written file(s) an interrupted run left in {args.output}", file=sys.stderr)
    names = output_names([path.name for path in files])  # the Ray job's names too (fastprotect.outputs)
    report: list[dict] = [{"input": str(path), "ok": False, "skipped": True, "error": reason} for path, reason in found.skipped]
    failed, stopped_by = 0, None
    with _sigterm_as_interrupt():  # so `kill` stops as Ctrl-C does: the PNG being written is removed
        try:
            for path, name in tqdm(list(zip(files, names)), desc="protecting", unit="image"):
                try:
                    reason = unreadable_reason(path)
                    if reason:
                        raise ImageError(reason)
                    # 8-bit levels, no budget map: a quarter of the float image's memory, and no map nobody sees
                    loaded = load_image(path, max_pixels=args.max_pixels, levels=True)
                    result = protector.protect(
                        loaded, eta=eta_from_levels(args.eta), target=args.target, adaptive_strength=args.adaptive_strength,
                        refine_steps=args.refine_steps, seed=args.seed, keep_budget_map=False,
                        compute_metrics=args.report is not None,  # PSNR, SSIM and LPIPS are read from the report only
                    )
                    info, protected = result.info, dataclasses.replace(loaded, pixels=result.image)
                    del loaded, result  # the clean pixels go before the PNG is encoded; its side information stays
                    destination = args.output / name
                    write_atomically(destination, lambda handle: save_png(protected, protected.pixels, handle))
                    report.append({"input": str(path), "output": str(destination), "ok": True, **info.as_dict()})
                except (ImageError, OSError, ValueError) as error:
                    failed += 1
                    message = _describe(error)
                    tqdm.write(f"skipped {path}: {message}", file=sys.stderr)
                    report.append({"input": str(path), "ok": False, "error": message})
        except KeyboardInterrupt as stop:
            stopped_by = signal.SIGTERM if isinstance(stop, _Terminated) else signal.SIGINT
    status = 1 if failed else 0
    if args.report:
        try:
            write_atomically(args.report, lambda handle: handle.write(json.dumps(report, indent=2, default=str).encode()))
        except OSError as error:  # its folder was checked at start; it changed since
            print(f"error: could not write the report {str(args.report)!r}: {_describe(error)}", file=sys.stderr)
            status = 1
    protected = sum(row["ok"] for row in report)
    skipped = f", {len(found.skipped)} skipped (each named above)" if found.skipped else ""
    if stopped_by is not None:
        print(f"interrupted after {protected} of {len(files)} image(s) protected, {failed} failed; every PNG in "
              f"{args.output} is complete", file=sys.stderr)
        return 128 + stopped_by  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    print(f"{protected} protected, {failed} failed{skipped} -> {args.output}")
    return status


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the program is, as Ctrl-C raises KeyboardInterrupt."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Turn SIGTERM into ``_Terminated`` while protecting: Python's default ends the process at once,
    skipping the cleanup that removes a half-written temporary. Main thread only (else a no-op)."""
    def stop(signum, frame):
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(error: BaseException) -> str:
    """One line for a user: an OSError's own words without the full path Python appends."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
