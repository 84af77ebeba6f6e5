"""Efficacy on held-out images, for the benchmarks: latent pull and mimic damage via the decoder.

Same definitions as ``train/evaluate.py`` (and ``fastprotect.metrics``): pull = ‖E(x̂) − E(y_t)‖ /
‖E(x) − E(y_t)‖ (lower is stronger), damage = LPIPS(D(E(x̂)), x) − LPIPS(D(E(x)), x) (higher is
stronger), with y_t the target the protector chose for the image, resized to the image's size.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import DEFAULT_IMAGES, real_image_paths
from fastprotect import metrics
from fastprotect.images import load_image
from fastprotect.losses import encode_target
from fastprotect.pgd import pgd_perturb
from fastprotect.strength import quantise_within_budget
from fastprotect.targets import TARGET_NAMES


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
    """Each file as 1×3×H×W in [0, 1] (8-bit grid); ``long_side`` resizes (area) so max(H, W) = it."""
    out = []
    for path in paths:
        x = load_image(path).pixels
        if long_side is not None and max(x.shape[-2:]) != long_side:
            h, w = x.shape[-2:]
            ratio = long_side / max(h, w)
            x = F.interpolate(x, size=(round(h * ratio), round(w * ratio)), mode="bilinear", align_corners=False, antialias=True)
            x = (x.clamp(0, 1) * 255).round() / 255
        out.append(x)
    return out


class Efficacy:
    """Pull and damage of protected images against ``autoencoder`` (needs its decoder) and LPIPS."""

    def __init__(self, autoencoder, perceptual, target_images: torch.Tensor, device: str = "cpu") -> None:
        self.encoder, self.decoder, self.perceptual = autoencoder.encoder, autoencoder.decoder, perceptual
        self.target_images = target_images.to(device)
        self.device = device
        self._clean: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def _round_trip(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder.encode(x)
        return z, self.decoder(z)[..., : x.shape[-2], : x.shape[-1]].float()

    @torch.no_grad()
    def measure(self, clean: torch.Tensor, protected: torch.Tensor, target: int) -> dict[str, float]:
        """One image: pull, damage, and invisibility (LPIPS, PSNR) of ``protected`` vs ``clean``."""
        clean, protected = clean.to(self.device), protected.to(self.device)
        key = hash((tuple(clean.shape), float(clean.sum()), float(clean[..., ::7, ::5].sum())))
        if key not in self._clean:
            self._clean[key] = self._round_trip(clean)
        clean_latent, clean_rt = self._clean[key]
        target_latent = encode_target(self.encoder, self.target_images[target : target + 1], *clean.shape[-2:]).latent
        latent, rt = self._round_trip(protected)
        return {
            "pull": float(metrics.latent_pull(clean_latent, latent, target_latent)[0]),
            "damage": float(metrics.mimic_damage(self.perceptual, clean, clean_rt, rt)[0]),
            "lpips": float(self.perceptual(protected, clean)[0]),
            "psnr": metrics.psnr(protected, clean),
        }


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]} if rows else {}


def protect_and_measure(protector, efficacy: Efficacy, images: list[torch.Tensor], **options) -> tuple[dict, list[torch.Tensor], list[int]]:
    """Protect every image with ``options`` (forwarded to ``protect``); mean efficacy, outputs, targets."""
    rows, outs, targets = [], [], []
    for x in images:
        result = protector.protect(x, compute_metrics=False, **options)
        t = TARGET_NAMES.index(result.info.target)
        rows.append(efficacy.measure(x, result.image, t))
        outs.append(result.image.cpu())
        targets.append(t)
    return mean_of(rows), outs, targets


def pgd_curve(efficacy: Efficacy, images: list[torch.Tensor], targets: list[int], steps: list[int], *, eta: float = 8 / 255,
              stop_at_damage: float | None = None) -> dict[int, dict]:
    """Per-image PGD from δ = 0 (step η/4, as train/evaluate.py), efficacy after each count in ``steps``;
    stops after the first count whose mean damage reaches ``stop_at_damage``."""
    encoder = efficacy.encoder
    curve: dict[int, dict] = {}
    deltas = [torch.zeros_like(x, device=efficacy.device) for x in images]
    done = 0
    for count in sorted(steps):
        rows = []
        for i, (x, t) in enumerate(zip(images, targets, strict=True)):
            x = x.to(efficacy.device)
            target = encode_target(encoder, efficacy.target_images[t : t + 1], *x.shape[-2:])
            deltas[i] = pgd_perturb(encoder, x, target, eta=eta, steps=count - done, step_size=eta / 4, init=deltas[i])
            protected = quantise_within_budget(x, (x + deltas[i]).clamp(0, 1), eta)
            rows.append(efficacy.measure(x, protected, t))
        done = count
        curve[count] = mean_of(rows)
        if stop_at_damage is not None and curve[count]["damage"] >= stop_at_damage:
            break
    return curve
