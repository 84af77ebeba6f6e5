"""Command line: ``python -m attack {roundtrip,img2img,lora,compare} ...``.

Every sub-command writes its pictures and numbers under ``--out``. ``--family`` picks the mimic
(``sd-1.5`` or ``flux.2-klein``, see :mod:`attack.families`); ``--dummy`` swaps its real weights for
the family's random-weight dummy stack (plumbing only). Protected images come from ``--protected`` files or, if
absent, are made on the fly with the library's :class:`fastprotect.protect.Protector`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from fastprotect.argparsing import OneLineArgumentParser
from fastprotect.hub import WeightsUnavailableError
from fastprotect.vocabulary import AUTOENCODER_KINDS, DEFAULT_ETA_LEVELS, MAX_ETA_LEVELS, eta_from_levels, is_image_name

from .families import DEFAULT_FAMILY, FAMILIES
from .settings import PRECISIONS, Img2ImgSettings, LoraSettings, SampleSettings

# Only the parser's needs are imported above: torch, diffusers and peft take seconds to import
# (most of `--help`'s time before), so each sub-command imports what it runs when it runs.
if TYPE_CHECKING:
    import torch

    from .mimic import Mimic


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m attack", description="Mimicry attacks on clean vs protected images.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, default=Path("attack_out"), help="output folder (created)")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    common.add_argument("--seed", type=int, default=0)
    protect = argparse.ArgumentParser(add_help=False)
    protect.add_argument("--protected", nargs="+", type=Path, help="protected copies of the inputs (files or folders), same order")
    protect.add_argument("--checkpoint", help="Protector checkpoint used when --protected is not given (default: the library's)")
    protect.add_argument("--eta", type=int, default=DEFAULT_ETA_LEVELS, help=f"protection budget in 8-bit levels (1–{MAX_ETA_LEVELS}) when protecting here")
    protect.add_argument("--lpips-backbone", help="local LPIPS AlexNet backbone file (offline machines)")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--family", choices=FAMILIES, default=DEFAULT_FAMILY, help="the mimic's model family")
    model.add_argument("--base", help="Hub id or local diffusers folder of the model the LoRA trains on (default: the family's)")
    model.add_argument("--sample-base", help="FLUX.2 only: the model that samples and edits (default: FLUX.2-klein-4B)")
    model.add_argument("--dummy", action="store_true", help="the family's random-weight dummy stack (checks plumbing, not efficacy)")
    lora = argparse.ArgumentParser(add_help=False)
    defaults, sample_defaults, edit = LoraSettings(), SampleSettings(), Img2ImgSettings()
    lora.add_argument("--prompt", default=defaults.instance_prompt, help="instance prompt (training and sampling)")
    lora.add_argument("--rank", type=int, default=defaults.rank)
    lora.add_argument("--steps", type=int, default=defaults.steps)
    lora.add_argument("--lr", type=float, default=defaults.learning_rate)
    lora.add_argument("--resolution", type=int, default=defaults.resolution)
    lora.add_argument("--batch-size", type=int, default=defaults.batch_size)
    lora.add_argument("--mixed-precision", choices=PRECISIONS, default=defaults.mixed_precision)
    lora.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None, help="default: on for CUDA")
    lora.add_argument("--samples", type=int, default=sample_defaults.count)
    lora.add_argument("--sample-steps", type=int, help=f"default: the family's ({sample_defaults.steps} for SD-1.5, 4 for FLUX.2 klein)")
    lora.add_argument("--guidance", type=float, help=f"default: the family's ({sample_defaults.guidance_scale} for SD-1.5, 1.0 for FLUX.2 klein)")

    commands = parser.add_subparsers(dest="command", required=True)
    roundtrip = commands.add_parser("roundtrip", parents=[common, protect], help="VAE round trip of clean vs protected")
    roundtrip.add_argument("images", nargs="+", type=Path, help="image files or folders")
    roundtrip.add_argument("--autoencoder", choices=[*AUTOENCODER_KINDS, "flux2-vae"], default="sd-vae", help="flux2-vae: FLUX.2 klein's VAE")
    roundtrip.add_argument("--source", help="autoencoder Hub id or local folder (default: the library's, e.g. SD-1.5's VAE; FLUX.2-klein-4B for flux2-vae)")
    img2img = commands.add_parser("img2img", parents=[common, protect, model], help="SDEdit of clean vs protected")
    img2img.add_argument("images", nargs="+", type=Path)
    img2img.add_argument("--prompt", default=edit.prompt)
    img2img.add_argument("--strength", type=float, default=edit.strength, help="SDEdit: fraction of the schedule re-generated, (0, 1]")
    img2img.add_argument("--steps", type=int, help=f"default: the family's ({edit.steps} for SD-1.5, 4 for FLUX.2 klein)")
    img2img.add_argument("--guidance", type=float, help=f"default: the family's ({edit.guidance_scale} for SD-1.5, 1.0 for FLUX.2 klein)")
    img2img.add_argument("--mode", choices=["reference", "sdedit"], default="reference", help="FLUX.2 only: image as reference (default) or SDEdit")
    one = commands.add_parser("lora", parents=[common, model, lora], help="train one LoRA and sample it")
    one.add_argument("images", nargs="+", type=Path)
    duel = commands.add_parser("compare", parents=[common, protect, model, lora], help="LoRA on clean vs LoRA on protected")
    duel.add_argument("images", nargs="+", type=Path, help="the clean images")
    duel.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True, help="LPIPS / pattern scores")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (a list, so tests call it in process; None reads ``sys.argv``)."""
    return build_parser().parse_args(argv)


def _image_paths(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if is_image_name(p.name)))
        else:
            files.append(path)
    if not files:
        raise SystemExit(f"no images found in {[str(p) for p in paths]}")
    return files


def _load(paths: Sequence[Path]) -> list[torch.Tensor]:
    from fastprotect.images import load_image

    return [load_image(path).pixels for path in _image_paths(paths)]


def _protected(args: argparse.Namespace, clean: list[torch.Tensor]) -> list[torch.Tensor]:
    """The ``--protected`` files, or the clean images protected now with the library."""
    from tqdm.auto import tqdm

    from fastprotect.protect import Protector

    from .pipeline import resolve_device

    if args.protected:
        protected = _load(args.protected)
        if len(protected) != len(clean) or any(p.shape != c.shape for p, c in zip(protected, clean)):
            raise SystemExit("--protected must list one image of the same size per clean image, in the same order")
        return protected
    protector = Protector.from_pretrained(args.checkpoint, lpips_backbone=args.lpips_backbone, device=resolve_device(args.device))
    return [protector.protect(image, eta=eta_from_levels(args.eta), seed=args.seed).image.cpu() for image in tqdm(clean, desc="protect")]


def _perceptual(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    from fastprotect.perceptual import load_perceptual

    return load_perceptual("alex", args.lpips_backbone, device=device)


def _mimic(args: argparse.Namespace) -> Mimic:
    from .mimic import load_mimic

    return load_mimic(args.family, args.base, sample_base=args.sample_base, dummy=args.dummy, device=args.device, seed=args.seed)


def _given(**options: object) -> dict[str, object]:
    """The options set on the command line (None: keep the family's default)."""
    return {key: value for key, value in options.items() if value is not None}


def _write_json(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


def run_roundtrip(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from .compare import comparison_grid
    from .pipeline import resolve_device
    from .roundtrip import load_round_tripper, roundtrip_report

    clean = _load(args.images)
    protected = _protected(args, clean)
    device = resolve_device(args.device)
    if args.autoencoder == "flux2-vae":
        from .flux2 import Flux2VaeView, load_flux2_vae

        model = Flux2VaeView(load_flux2_vae(args.source, device=device))
    else:
        model = load_round_tripper(args.autoencoder, args.source, device=device)
    perceptual = _perceptual(args, device)
    records = []
    for index, (x, x_hat) in enumerate(tqdm(list(zip(clean, protected)), desc="round trip")):
        report = roundtrip_report(model, x, x_hat, perceptual)
        columns = [("original", x), ("clean round trip", report.clean_round_trip), ("protected", x_hat), ("protected round trip", report.protected_round_trip)]
        comparison_grid(columns, tile=256, orientation="columns").save(args.out / f"roundtrip_{index:03d}.png")
        records.append(report.as_dict())
    _write_json(args.out / "roundtrip.json", {"autoencoder": args.autoencoder, "images": records})


def run_img2img(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from .compare import comparison_grid
    from .mimic import edit_settings, family_img2img

    clean = _load(args.images)
    protected = _protected(args, clean)
    mimic = _mimic(args)
    settings = edit_settings(
        args.family, prompt=args.prompt, strength=args.strength, seed=args.seed, mode=args.mode, **_given(steps=args.steps, guidance_scale=args.guidance)
    )
    for index, (x, x_hat) in enumerate(tqdm(list(zip(clean, protected)), desc="img2img")):
        clean_edit, protected_edit = family_img2img(mimic, [x, x_hat], settings)
        columns = [("clean", x), ("protected", x_hat), ("clean edit", clean_edit), ("protected edit", protected_edit)]
        comparison_grid(columns, tile=256, orientation="columns").save(args.out / f"img2img_{index:03d}.png")
    (args.out / "img2img.json").write_text(json.dumps(asdict(settings), indent=2))


def _lora_settings(args: argparse.Namespace) -> tuple[LoraSettings, SampleSettings]:
    from .mimic import lora_settings, sample_settings

    training = lora_settings(
        args.family, instance_prompt=args.prompt, rank=args.rank, steps=args.steps, learning_rate=args.lr, resolution=args.resolution,
        batch_size=args.batch_size, seed=args.seed, mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
    )
    sampling = sample_settings(
        args.family, prompt=args.prompt, count=args.samples, resolution=args.resolution, seed=args.seed,
        **_given(steps=args.sample_steps, guidance_scale=args.guidance),
    )
    return training, sampling


class _Bar:
    """A tqdm bar per training run for the ``(step, total, loss)`` progress callback."""

    def __init__(self) -> None:
        self.bars: dict = {}

    def __call__(self, name: str, step: int, total: int, loss: float) -> None:
        from tqdm.auto import tqdm

        bar = self.bars.get(name) or self.bars.setdefault(name, tqdm(total=total, desc=f"LoRA {name}"))
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if step == total:
            bar.close()


def run_lora(args: argparse.Namespace) -> None:
    from .compare import comparison_grid, to_pil
    from .mimic import family_samples, family_save_lora, family_train_lora

    images = _load(args.images)
    training, sampling = _lora_settings(args)
    mimic = _mimic(args)
    bar = _Bar()
    run = family_train_lora(mimic, images, training, progress=lambda step, total, loss: bar("train", step, total, loss))
    family_save_lora(mimic, run, args.out / "lora")
    samples = family_samples(mimic, sampling, adapter=args.out / "lora")  # from the file, as a mimic would share it
    for index, sample in enumerate(samples):
        to_pil(sample).save(args.out / f"sample_{index:02d}.png")
    comparison_grid([("inputs", images), ("LoRA samples", samples)]).save(args.out / "grid.png")
    print(f"LoRA: {len(run.losses)} steps in {run.seconds:.1f} s, final loss {run.losses[-1]:.4f}; saved to {args.out / 'lora'}")


def run_compare(args: argparse.Namespace) -> None:
    from .compare import duel_grid, duel_scores, target_images
    from .mimic import family_lora_duel
    from .pipeline import resolve_device

    clean = _load(args.images)
    protected = _protected(args, clean)
    training, sampling = _lora_settings(args)
    mimic = _mimic(args)
    duel = family_lora_duel(mimic, clean, protected, args.out, training, sampling, progress=_Bar())
    duel_grid(clean, protected, duel.clean_samples, duel.protected_samples).save(args.out / "grid.png")
    record: dict = {
        "family": args.family,
        "training": asdict(training),
        "sampling": asdict(sampling),
        "seconds": {"clean": duel.clean.seconds, "protected": duel.protected.seconds},
    }
    if args.metrics:
        perceptual = _perceptual(args, resolve_device(args.device))
        record["scores"] = duel_scores(clean, duel.clean_samples, duel.protected_samples, perceptual, target_images())
    _write_json(args.out / "metrics.json", record)


COMMANDS = {"roundtrip": run_roundtrip, "img2img": run_img2img, "lora": run_lora, "compare": run_compare}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        COMMANDS[args.command](args)
    except WeightsUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
