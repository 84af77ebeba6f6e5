"""Efficacy on held-out images, for the benchmarks: latent pull and mimic damage via the decoder.

Measured by the evaluation's own harness (``fastprotect.evaluation.Harness``, the one
``python -m train.evaluate`` uses), so the definitions are the same: pull = ‖E(x̂) − E(y_t)‖ /
‖E(x) − E(y_t)‖ (lower is stronger), damage = LPIPS(D(E(x̂)), x) − LPIPS(D(E(x)), x) (higher is
stronger), with y_t the target the protector chose for the image, resized to the image's size.
The benchmarks measure held-out images one at a time at their own (reduced) size.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.common import DEFAULT_IMAGES, real_image_paths
from fastprotect.evaluation import Harness
from fastprotect.images import fit_within, load_image, resize_tensor
from fastprotect.losses import encode_target
from fastprotect.pgd import pgd_perturb
from fastprotect.strength import quantise_within_budget
from fastprotect.vocabulary import DEFAULT_ETA, TARGET_NAMES


def find_split(checkpoint: str | Path | None) -> Path | None:
    """The ``split.json`` a training run wrote next to (or above) its checkpoint folder."""
    if checkpoint is None:
        return None
    folder = Path(checkpoint).resolve()
    for candidate in [folder, *folder.parents][:4]:
        if (candidate / "split.json").is_file():
            return candidate / "split.json"
    return None


def heldout_paths(checkpoint: str | Path | None, per_domain: int, *, images: Path = DEFAULT_IMAGES,
                  split: Path | None = None) -> tuple[list[Path], str]:
    """Up to ``per_domain`` held-out image files per domain, and where the held-out list came from.

    From the training run's ``split.json`` when there is one (images the mixture never saw);
    otherwise the last files of each domain folder, which a random mixture never saw either.
    """
    split = split or find_split(checkpoint)
    if split is not None:
        payload = json.loads(split.read_text())
        roots = [Path(r) for r in payload["roots"]]
        chosen: dict[str, list[Path]] = {}
        for entry in payload["heldout"]:
            bucket = chosen.setdefault(entry["domain"], [])
            if len(bucket) < per_domain:
                bucket.append(roots[entry["root"]] / entry["path"])
        return [p for domain in sorted(chosen) for p in chosen[domain]], f"held-out list of {split}"
    by_domain: dict[str, list[Path]] = {}
    for path in real_image_paths(images):
        by_domain.setdefault(path.parent.name, []).append(path)
    return [p for d in sorted(by_domain) for p in by_domain[d][-per_domain:]], f"last {per_domain} files per domain of {images}"


def load_heldout(paths: list[Path], long_side: int | None = None) -> list[torch.Tensor]:
    """Each file as 1×3×H×W in [0, 1] (8-bit grid); ``long_side``: scaled down (never up, aspect kept;
    ``fastprotect.images.fit_within``) so that max(H, W) ≤ it, bilinear with antialiasing."""
    out = []
    for path in paths:
        x = load_image(path).pixels
        height, width = fit_within(*x.shape[-2:], long_side)
        if (height, width) != tuple(x.shape[-2:]):
            x = (resize_tensor(x, height, width).clamp(0, 1) * 255).round() / 255
        out.append(x)
    return out


def make_harness(models, device: str = "cpu") -> Harness:
    """The evaluation harness for ``benchmarks.common.Models``: its autoencoder, LPIPS and the mixture's targets."""
    return Harness(models.autoencoder, models.perceptual, models.mixture.target_images_float(), device=device)


def measure_one(harness: Harness, clean: torch.Tensor, protected: torch.Tensor, target: int) -> dict[str, float]:
    """One image (1×3×H×W): pull, damage, LPIPS, PSNR, SSIM, L∞ as floats (the clean side is encoded once)."""
    return {key: float(value[0]) for key, value in harness.measure(clean, protected, torch.tensor([target])).items()}


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]} if rows else {}


def protect_and_measure(protector, harness: Harness, images: list[torch.Tensor], **options) -> tuple[dict, list[torch.Tensor], list[int]]:
    """Protect every image with ``options`` (forwarded to ``protect``); mean efficacy, outputs, targets."""
    rows, outs, targets = [], [], []
    for x in images:
        result = protector.protect(x, compute_metrics=False, **options)
        t = TARGET_NAMES.index(result.info.target)
        rows.append(measure_one(harness, x, result.image, t))
        outs.append(result.image.cpu())
        targets.append(t)
    return mean_of(rows), outs, targets


def pgd_curve(harness: Harness, images: list[torch.Tensor], targets: list[int], steps: list[int], *, eta: float = DEFAULT_ETA,
              stop_at_damage: float | None = None) -> dict[int, dict]:
    """Per-image PGD from δ = 0 (step η/4, as train/evaluate.py), efficacy after each count in ``steps``;
    stops after the first count whose mean damage reaches ``stop_at_damage``."""
    encoder = harness.encoder
    curve: dict[int, dict] = {}
    deltas = [torch.zeros_like(x, device=harness.device) for x in images]
    done = 0
    for count in sorted(steps):
        rows = []
        for i, (x, t) in enumerate(zip(images, targets, strict=True)):
            x = x.to(harness.device)
            target = encode_target(encoder, harness.target_images[t : t + 1], *x.shape[-2:])
            deltas[i] = pgd_perturb(encoder, x, target, eta=eta, steps=count - done, step_size=eta / 4, init=deltas[i])
            protected = quantise_within_budget(x, (x + deltas[i]).clamp(0, 1), eta)
            rows.append(measure_one(harness, x, protected, t))
        done = count
        curve[count] = mean_of(rows)
        if stop_at_damage is not None and curve[count]["damage"] >= stop_at_damage:
            break
    return curve
