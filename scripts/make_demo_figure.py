"""Make ``docs/images/roundtrip_demo.png``: original | clean round trip | protected | protected round trip.

    python -m scripts.make_demo_figure            # uses ../shared/weights and a public-domain painting

The mimic's view is the TAEF2 round trip (real weights, offline). The protected image comes from
the library's Protector when a TAEF2 checkpoint (generator or mixture) is committed
(``fastprotect.bundle.bundled_checkpoint()``, the default generator), else from a per-image PGD toward the "mid" target (``fastprotect.pgd.pgd_perturb``). LPIPS
(AlexNet, real backbone) to the original is written on each tile.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from attack.compare import comparison_grid
from attack.pipeline import center_square, one_thread
from attack.roundtrip import load_round_tripper, roundtrip_report
from fastprotect.encoders import Autoencoder
from fastprotect.images import load_image
from fastprotect.losses import encode_target
from fastprotect.perceptual import load_perceptual
from fastprotect.pgd import pgd_perturb
from fastprotect.targets import target_pattern
from fastprotect.vocabulary import DEFAULT_ETA

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# Hokusai, The Great Wave off Kanagawa (c. 1831): public domain. Never a face (research-only set).
DEFAULT_IMAGE = SHARED / "data" / "images" / "painting" / "painting_004.jpg"
ETA = DEFAULT_ETA


def protected_copy(
    autoencoder: Autoencoder, image: torch.Tensor, perceptual: torch.nn.Module, *, eta: float = ETA, pgd_steps: int = 20,
    checkpoint: Path | None = None,
) -> tuple[torch.Tensor, str]:
    """A protected copy of ``image`` (1×3×H×W, [0, 1], within ±eta) and a note on how it was made.

    ``checkpoint`` (default: the committed default, ``fastprotect.bundle.bundled_checkpoint()``) through the
    library's Protector when there is one trained against this autoencoder's kind; otherwise
    ``pgd_steps`` signed-gradient steps toward the "mid" pattern on the autoencoder's encoder.
    """
    from fastprotect.bundle import bundled_checkpoint
    from fastprotect.generator import PerturbationGenerator
    from fastprotect.mixture import MixtureOfPerturbations
    from fastprotect.protect import Protector
    from fastprotect.sources import checkpoint_method

    checkpoint = Path(checkpoint) if checkpoint is not None else bundled_checkpoint()
    if Path(checkpoint, "config.json").is_file():
        method = checkpoint_method(str(checkpoint))
        model = (PerturbationGenerator if method == "generator" else MixtureOfPerturbations).from_pretrained(checkpoint)
        if model.config.encoder_kind == autoencoder.kind:
            protector = Protector(autoencoder, perceptual=perceptual, **{method: model})
            return protector.protect(image, eta=eta).image, f"Protector ({checkpoint.name})"
    height, width = image.shape[-2:]
    target = encode_target(autoencoder.encoder, target_pattern("mid", max(height, width)), height, width)
    delta = pgd_perturb(autoencoder.encoder, image, target, eta=eta, steps=pgd_steps)
    return (image + delta).clamp(0, 1), f"PGD toward 'mid', {pgd_steps} steps"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=SHARED / "weights", help="folder with taef2_*.pth and the LPIPS backbone")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--size", type=int, default=320, help="centre square side the demo runs at")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps when no checkpoint is committed")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "roundtrip_demo.png")
    args = parser.parse_args(argv)

    perceptual = load_perceptual("alex", args.weights / "alexnet_lpips_features.safetensors")
    autoencoder = load_round_tripper("taef2", args.weights, device="cpu")
    image = center_square(load_image(args.image).pixels, args.size)
    with one_thread():
        start = time.perf_counter()
        protected, how = protected_copy(autoencoder, image, perceptual, pgd_steps=args.steps)
        seconds = time.perf_counter() - start
        report = roundtrip_report(autoencoder, image, protected, perceptual)
    tiles = [
        ("original", image),
        (f"clean round trip  LPIPS {report.lpips_clean_round_trip:.3f}", report.clean_round_trip),
        (f"protected  LPIPS {report.lpips_protected:.3f}", protected),
        (f"protected round trip  LPIPS {report.lpips_protected_round_trip:.3f}", report.protected_round_trip),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    comparison_grid(tiles, tile=args.size, orientation="columns").save(args.out, optimize=True)
    numbers = ", ".join(f"{key}={value:.3f}" for key, value in report.as_dict().items())
    print(f"{args.image.name} at {args.size}², {how} in {seconds:.1f} s (1 CPU thread): {numbers}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
