"""Held-out evaluation: ``python -m train.evaluate --checkpoint RUN/final --data DIR --split RUN/split.json``.

For each method (a mixture checkpoint with given inference options, or per-image PGD) and each
held-out image (resized + centre-cropped to ``--size``²), measured against the encoder the
checkpoint was trained on and its decoder:

* invisibility of x̂ vs x: LPIPS (AlexNet), PSNR, SSIM, L∞ in 8-bit levels;
* efficacy: latent pull ‖E(x̂) − E(y_t)‖ / ‖E(x) − E(y_t)‖ (lower = stronger) and mimic damage
  LPIPS(D(E(x̂)), x) − LPIPS(D(E(x)), x) (higher = stronger);
* latency per image (same run, same machine);
* robustness: efficacy after JPEG q90 / q75, resize to half and back, Gaussian noise σ = 4/255
  (x̂ and x both transformed, so only the protection's survival is measured);
* damage-vs-LPIPS curves over η with and without adaptive strength.
Results go to a JSON file and a markdown report on stdout.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from fastprotect import metrics
from fastprotect.targets import TARGET_NAMES

from . import data

TRANSFORMS = ("jpeg90", "jpeg75", "resize-half", "noise4")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description="Evaluate FastProtect mixtures on held-out images.")
    p.add_argument("--checkpoint", type=Path, required=True, help="the full-method mixture (final)")
    p.add_argument("--row", action="append", default=[], metavar="LABEL=PATH[:OPTIONS]",
                   help="extra mixture rows, e.g. 'UAP=runs/uap/final' or 'fixed=runs/fixedmid/final:target=mid,adaptive=0' "
                        "(LABEL must not contain '=')")
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--split", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="JSON results")
    p.add_argument("--markdown", type=Path, default=None, help="also write the markdown report here")
    p.add_argument("--encoder-source", default=None, help="local encoder weights (default: the checkpoint's encoder_source)")
    p.add_argument("--lpips-backbone", default=None, help="local LPIPS AlexNet backbone file")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--per-domain", type=int, default=3, help="held-out images per domain")
    p.add_argument("--eta", type=float, default=8.0, help="budget in 8-bit levels")
    p.add_argument("--pgd-steps", default="1,2,3,5,10,20", help="PGD step counts at which PGD is measured")
    p.add_argument("--pgd-report", default="5,20", help="the two PGD step counts shown as full rows")
    p.add_argument("--curve-etas", default="4,6,8,12")
    p.add_argument("--no-robustness", action="store_true")
    p.add_argument("--no-curves", action="store_true")
    p.add_argument("--compare", action="append", default=[], metavar="A,B",
                   help="per domain: does row A beat row B on mimic damage at equal or lower LPIPS?")
    p.add_argument("--card", type=Path, default=None, help="write the markdown report into this model card's evaluation section")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.pgd_steps = sorted({int(s) for s in args.pgd_steps.split(",")})
        args.pgd_report = [int(s) for s in args.pgd_report.split(",")]
        args.curve_etas = [float(s) for s in args.curve_etas.split(",")]
    except ValueError:
        parser.error("--pgd-steps, --pgd-report and --curve-etas are comma-separated numbers")
    if not set(args.pgd_report) <= set(args.pgd_steps):
        parser.error("--pgd-report step counts must be among --pgd-steps")
    if not args.split.is_file():
        parser.error(f"--split {args.split}: no such file")
    rows = []
    for spec in args.row:
        label, _, rest = spec.partition("=")
        path, _, options = rest.partition(":")
        if not label or not path:
            parser.error(f"--row {spec!r}: expected LABEL=PATH[:key=value,...]")
        opts = dict(item.split("=", 1) for item in options.split(",") if item)
        rows.append({"label": label, "path": Path(path), "target": opts.get("target", "auto"), "adaptive": opts.get("adaptive", "0") == "1"})
    args.rows = rows
    args.compare = [tuple(pair.split(",", 1)) for pair in args.compare]
    if any(len(pair) != 2 for pair in args.compare):
        parser.error("--compare takes two row labels separated by a comma")
    return args


# ------------------------------------------------------------------------------------ helpers
def transform(images: torch.Tensor, name: str, generator: torch.Generator) -> torch.Tensor:
    """One of TRANSFORMS applied to B×3×H×W in [0, 1]."""
    if name.startswith("jpeg"):
        from PIL import Image

        quality = int(name[4:])
        out = []
        for image in images:
            array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).contiguous().numpy()
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
            decoded = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
            out.append(torch.frombuffer(bytearray(decoded.tobytes()), dtype=torch.uint8).reshape(array.shape).permute(2, 0, 1).float() / 255)
        return torch.stack(out)
    if name == "resize-half":
        h, w = images.shape[-2:]
        small = F.interpolate(images, size=(h // 2, w // 2), mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    if name == "noise4":
        return (images + torch.randn(images.shape, generator=generator) * 4 / 255).clamp(0, 1)
    raise ValueError(name)


class Bench:
    """Encoder, decoder, LPIPS and the clean references for one batch of held-out images."""

    def __init__(self, autoencoder, perceptual, images: torch.Tensor, target_images: torch.Tensor) -> None:
        self.encoder, self.decoder, self.perceptual = autoencoder.encoder, autoencoder.decoder, perceptual
        self.x = images
        size = images.shape[-1]
        with torch.no_grad():
            small = F.interpolate(target_images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            self.target_latents = self.encoder.encode(small)
            self.clean_latent, self.clean_round_trip = self.round_trip(images)

    @torch.no_grad()
    def round_trip(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents, decoded = [], []
        for chunk in images.split(4):
            z = self.encoder.encode(chunk)
            latents.append(z)
            decoded.append(self.decoder(z).clamp(0, 1))
        return torch.cat(latents), torch.cat(decoded)

    @torch.no_grad()
    def lpips(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.perceptual(p, q) for p, q in zip(a.split(4), b.split(4))]).flatten()

    @torch.no_grad()
    def efficacy(self, protected: torch.Tensor, targets: torch.Tensor, clean: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per image: pull towards E(y_t) and mimic damage; ``clean`` = the transformed clean image."""
        if clean is None:
            clean_latent, clean_rt, reference = self.clean_latent, self.clean_round_trip, self.x
        else:
            clean_latent, clean_rt = self.round_trip(clean)
            reference = self.x
        latent, round_trip = self.round_trip(protected)
        pull = metrics.latent_pull(clean_latent, latent, self.target_latents[targets])
        damage = self.lpips(round_trip, reference) - self.lpips(clean_rt, reference)
        return {"pull": pull, "damage": damage}

    @torch.no_grad()
    def invisibility(self, protected: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "lpips": self.lpips(protected, self.x),
            "psnr": torch.tensor([metrics.psnr(p[None], x[None]) for p, x in zip(protected, self.x)]),
            "ssim": torch.tensor([metrics.ssim(p[None], x[None]) for p, x in zip(protected, self.x)]),
            "linf": torch.tensor([float(metrics.linf_levels(p[None], x[None])) for p, x in zip(protected, self.x)]),
        }


def summarise(per_image: dict[str, torch.Tensor], domains: list[str]) -> dict[str, dict[str, float]]:
    """Mean of every per-image metric per domain and over all images."""
    out: dict[str, dict[str, float]] = {}
    for domain in sorted(set(domains)) + ["all"]:
        mask = torch.tensor([d == domain or domain == "all" for d in domains])
        out[domain] = {key: float(value[mask].float().mean()) for key, value in per_image.items() if value.numel() == len(domains)}
    return out


def run_mixture(protector, images: torch.Tensor, *, eta: float, target: str, adaptive: bool) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Protect each image alone (as the app does); returns x̂, target indices, mean seconds/image."""
    outs, targets, seconds = [], [], 0.0
    for image in images:
        start = time.perf_counter()
        result = protector.protect(image[None], eta=eta, target=target, adaptive_strength=adaptive, compute_metrics=False)
        seconds += time.perf_counter() - start
        outs.append(result.image)
        targets.append(TARGET_NAMES.index(result.info.target))
    return torch.cat(outs), torch.tensor(targets), seconds / len(images)


def run_pgd(bench: Bench, encoder, targets: torch.Tensor, target_images: torch.Tensor, *, eta: float, steps: list[int],
            on_checkpoint: Callable[[int, torch.Tensor, float], None]) -> None:
    """Per-image PGD from δ = 0 (step η/4, the library default), measured after each count in ``steps``.

    Runs as one batch per target; seconds per image = batch time / batch size (favours PGD a little:
    a batch uses the cores better than one image would).
    """
    from fastprotect.losses import encode_target
    from fastprotect.pgd import pgd_perturb
    from fastprotect.strength import quantise_within_budget

    x = bench.x
    size = x.shape[-1]
    delta = torch.zeros_like(x)
    seconds = 0.0
    done = 0
    encoded = [encode_target(encoder, target_images[i : i + 1], size, size) for i in range(len(TARGET_NAMES))]
    for count in steps:
        start = time.perf_counter()
        for t in targets.unique().tolist():
            mask = targets == t
            delta[mask] = pgd_perturb(encoder, x[mask], encoded[t], eta=eta, steps=count - done, step_size=eta / 4, init=delta[mask])
        seconds += time.perf_counter() - start
        done = count
        protected = quantise_within_budget(x, (x + delta).clamp(0, 1), eta)
        on_checkpoint(count, protected, seconds / len(x))


# ---------------------------------------------------------------------------------- the run
def evaluate(args: argparse.Namespace) -> dict:
    from fastprotect.encoders import load_autoencoder
    from fastprotect.mixture import MixtureOfPerturbations
    from fastprotect.perceptual import load_perceptual
    from fastprotect.protect import Protector

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    wall = time.perf_counter()
    _, heldout, _ = data.read_split(args.split)
    roots = [Path(r) for r in args.data]
    chosen: list[data.Entry] = []
    for domain in sorted({e.domain for e in heldout}):
        members = sorted((e for e in heldout if e.domain == domain), key=lambda e: data._rank(e.path, args.seed))
        chosen.extend(members[: args.per_domain])
    domains = [e.domain for e in chosen]
    images = data.load_entries(roots, chosen, args.size).float() / 255

    full = MixtureOfPerturbations.from_pretrained(args.checkpoint)
    cfg = full.config
    autoencoder = load_autoencoder(cfg.encoder_kind, args.encoder_source or cfg.encoder_source, subfolder=cfg.encoder_subfolder, with_decoder=True)
    autoencoder.encoder.eval().requires_grad_(False)
    autoencoder.decoder.eval().requires_grad_(False)
    perceptual = load_perceptual("alex", args.lpips_backbone).eval()
    target_images = full.target_images_float()
    bench = Bench(autoencoder, perceptual, images, target_images)
    eta = args.eta / 255
    results: dict = {"images": [e.path for e in chosen], "domains": domains, "size": args.size, "eta_levels": args.eta, "rows": {}, "notes": []}
    protectors: dict[str, object] = {}

    def protector_for(path: Path):
        if str(path) not in protectors:
            mixture = full if Path(path) == args.checkpoint else MixtureOfPerturbations.from_pretrained(path)
            protectors[str(path)] = Protector(autoencoder, mixture=mixture, perceptual=perceptual, assign_size=mixture.config.assign_size)
        return protectors[str(path)]

    def record(label: str, protected: torch.Tensor, targets: torch.Tensor, seconds: float, extra: dict | None = None) -> dict:
        per_image = bench.invisibility(protected) | bench.efficacy(protected, targets)
        row = {"summary": summarise(per_image, domains), "latency_s": seconds, "targets": targets.tolist()} | (extra or {})
        results["rows"][label] = row
        a = row["summary"]["all"]
        print(f"[{time.perf_counter() - wall:6.0f}s] {label}: LPIPS {a['lpips']:.4f} pull {a['pull']:.3f} damage {a['damage']:.4f} ({seconds:.3f} s/img)", flush=True)
        return row

    # mixture rows: the ablations given with --row, then the full method without / with adaptive strength
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    specs = list(args.rows) + [
        {"label": "full (final)", "path": args.checkpoint, "target": "auto", "adaptive": False},
        {"label": "full (final) + adaptive strength", "path": args.checkpoint, "target": "auto", "adaptive": True},
    ]
    for spec in specs:
        protected, targets, seconds = run_mixture(protector_for(spec["path"]), images, eta=eta, target=spec["target"], adaptive=spec["adaptive"])
        outputs[spec["label"]] = (protected, targets)
        record(spec["label"], protected, targets, seconds, {"checkpoint": str(spec["path"]), "target": spec["target"], "adaptive_strength": spec["adaptive"]})
    full_targets = outputs["full (final)"][1]

    # per-image PGD baseline towards the same targets as the full method
    pgd_trace: dict[int, dict] = {}
    pgd_images: dict[int, torch.Tensor] = {}

    def on_pgd(count: int, protected: torch.Tensor, seconds: float) -> None:
        pgd_images[count] = protected
        row = record(f"PGD {count} steps", protected, full_targets, seconds, {"pgd_steps": count})
        pgd_trace[count] = row

    run_pgd(bench, autoencoder.encoder, full_targets, target_images, eta=eta, steps=args.pgd_steps, on_checkpoint=on_pgd)
    reference = results["rows"]["full (final) + adaptive strength"]
    matched = next((c for c in args.pgd_steps if pgd_trace[c]["summary"]["all"]["pull"] <= reference["summary"]["all"]["pull"]), None)
    matched_damage = next((c for c in args.pgd_steps if pgd_trace[c]["summary"]["all"]["damage"] >= reference["summary"]["all"]["damage"]), None)
    results["pgd_match"] = {
        "reference": "full (final) + adaptive strength",
        "steps_matching_pull": matched,
        "latency_ratio_pull": (pgd_trace[matched]["latency_s"] / reference["latency_s"]) if matched else None,
        "steps_matching_damage": matched_damage,
        "latency_ratio_damage": (pgd_trace[matched_damage]["latency_s"] / reference["latency_s"]) if matched_damage else None,
        "measured_steps": args.pgd_steps,
    }

    # robustness: the first ablation row (UAP when given), the full method, and the strongest reported PGD
    if not args.no_robustness:
        generator = torch.Generator().manual_seed(args.seed)
        candidates = ([args.rows[0]["label"]] if args.rows else []) + ["full (final) + adaptive strength"]
        robust_rows = {label: outputs[label] for label in candidates}
        robust_rows[f"PGD {max(args.pgd_report)} steps"] = (pgd_images[max(args.pgd_report)], full_targets)
        results["robustness"] = {}
        for name in TRANSFORMS:
            noise_seed = torch.Generator().manual_seed(args.seed + 7)
            clean_t = transform(images, name, noise_seed)
            for label, (protected, targets) in robust_rows.items():
                noise_seed = torch.Generator().manual_seed(args.seed + 7)
                per_image = bench.efficacy(transform(protected, name, noise_seed), targets, clean=clean_t)
                results["robustness"].setdefault(label, {})[name] = summarise(per_image, domains)
            print(f"[{time.perf_counter() - wall:6.0f}s] robustness {name} done", flush=True)
        del generator

    # damage-vs-LPIPS curves over eta, with and without adaptive strength (full method and the first row)
    if not args.no_curves:
        results["curves"] = {}
        curve_specs = [("full", args.checkpoint, True), ("full", args.checkpoint, False)]
        if args.rows:
            curve_specs.append((args.rows[0]["label"], args.rows[0]["path"], False))
        for name, path, adaptive in curve_specs:
            key = f"{name}{' + adaptive strength' if adaptive else ''}"
            points = []
            for levels in args.curve_etas:
                protected, targets, seconds = run_mixture(protector_for(path), images, eta=levels / 255, target="auto", adaptive=adaptive)
                per_image = bench.invisibility(protected) | bench.efficacy(protected, targets)
                summary = summarise(per_image, domains)
                s = summary["all"]
                points.append({"eta_levels": levels, "lpips": s["lpips"], "damage": s["damage"], "pull": s["pull"], "psnr": s["psnr"],
                               "by_domain": {d: {"lpips": v["lpips"], "damage": v["damage"]} for d, v in summary.items() if d != "all"}})
            results["curves"][key] = points
            print(f"[{time.perf_counter() - wall:6.0f}s] curve {key} done", flush=True)
        results["equal_lpips"] = equal_lpips(results["curves"])
        if args.rows:
            results["equal_lpips_by_domain"] = [
                equal_lpips_by_domain(results["curves"], key, args.rows[0]["label"], args.eta) for key in ("full", "full + adaptive strength")
            ]
    results["comparisons"] = [compare(results["rows"], a, b) for a, b in args.compare]
    results["wall_time_s"] = time.perf_counter() - wall
    results["threads"] = torch.get_num_threads()
    return results


def compare(rows: dict, a: str, b: str) -> dict:
    """Per domain: A wins when its mimic damage is higher at equal or lower LPIPS than B's."""
    wins = {}
    for domain, sa in rows[a]["summary"].items():
        sb = rows[b]["summary"][domain]
        wins[domain] = {"win": sa["damage"] > sb["damage"] and sa["lpips"] <= sb["lpips"],
                        "damage": [sa["damage"], sb["damage"]], "lpips": [sa["lpips"], sb["lpips"]]}
    domains = [d for d in wins if d != "all"]
    return {"a": a, "b": b, "per_domain": wins, "domains_won": sum(wins[d]["win"] for d in domains), "domains": len(domains)}


def _interpolate(points: list[dict], lpips: float) -> float | None:
    """Damage at a given LPIPS by linear interpolation along a curve (None outside its range)."""
    pts = sorted(points, key=lambda p: p["lpips"])
    for a, b in zip(pts, pts[1:]):
        if a["lpips"] <= lpips <= b["lpips"] and b["lpips"] > a["lpips"]:
            w = (lpips - a["lpips"]) / (b["lpips"] - a["lpips"])
            return a["damage"] + w * (b["damage"] - a["damage"])
    return None


def equal_lpips(curves: dict[str, list[dict]]) -> list[dict]:
    """Every curve's damage at the LPIPS of each point of every other curve (where both are defined)."""
    out = []
    for level in sorted({p["lpips"] for points in curves.values() for p in points}):
        entry = {"lpips": level}
        for key, points in curves.items():
            entry[key] = _interpolate(points, level)
        if sum(v is not None for k, v in entry.items() if k != "lpips") >= 2:
            out.append(entry)
    return out


def equal_lpips_by_domain(curves: dict[str, list[dict]], a: str, b: str, eta_levels: float) -> dict:
    """Per domain: curve A's damage at its η = ``eta_levels`` point vs curve B's damage interpolated
    at the same LPIPS (the done-when comparison at *equal* LPIPS rather than equal η); A wins a
    domain when its damage is higher. None where that LPIPS is outside B's curve."""
    point = next(p for p in curves[a] if p["eta_levels"] == eta_levels)
    per_domain = {}
    for domain, at in point["by_domain"].items():
        other = [{"lpips": p["by_domain"][domain]["lpips"], "damage": p["by_domain"][domain]["damage"]} for p in curves[b]]
        theirs = _interpolate(other, at["lpips"])
        per_domain[domain] = {"lpips": at["lpips"], "damage": [at["damage"], theirs],
                              "win": None if theirs is None else at["damage"] > theirs}
    won = sum(bool(v["win"]) for v in per_domain.values())
    return {"a": a, "b": b, "eta_levels": eta_levels, "per_domain": per_domain, "domains_won": won, "domains": len(per_domain)}


# ---------------------------------------------------------------------------------- reports
def markdown(results: dict) -> str:
    domains = sorted(set(results["domains"])) + ["all"]
    counts = ", ".join(f"{d} {results['domains'].count(d)}" for d in sorted(set(results["domains"])))
    lines = [f"Held-out images: {len(results['images'])} ({counts}), "
             f"{results['size']}², η = {results['eta_levels']:g}/255, {results['threads']} torch threads, "
             f"evaluation wall time {results['wall_time_s']:.0f} s.", ""]
    lines += ["| method | LPIPS ↓ | PSNR | SSIM | L∞ | pull ↓ | damage ↑ | s/img |", "|---|---|---|---|---|---|---|---|"]
    for label, row in results["rows"].items():
        a = row["summary"]["all"]
        lines.append(f"| {label} | {a['lpips']:.4f} | {a['psnr']:.2f} | {a['ssim']:.4f} | {a['linf']:.1f} | {a['pull']:.3f} | {a['damage']:.4f} | {row['latency_s']:.3f} |")
    lines += ["", "Per domain (LPIPS / mimic damage):", "", "| method | " + " | ".join(domains) + " |", "|---" * (len(domains) + 1) + "|"]
    for label, row in results["rows"].items():
        cells = [f"{row['summary'][d]['lpips']:.3f} / {row['summary'][d]['damage']:.3f}" for d in domains]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for c in results.get("comparisons", []):
        won = [d for d, w in c["per_domain"].items() if d != "all" and w["win"]]
        lines += ["", f"**{c['a']}** vs **{c['b']}**: higher damage at equal or lower LPIPS in {c['domains_won']} of {c['domains']} domains"
                  f" ({', '.join(won) or 'none'})."]
    m = results.get("pgd_match")
    if m:
        lines += ["", f"PGD (per image, from δ = 0, step η/4) vs `{m['reference']}`: "
                  f"pull matched at {m['steps_matching_pull']} steps (latency ratio {_fmt(m['latency_ratio_pull'])}), "
                  f"damage matched at {m['steps_matching_damage']} steps (latency ratio {_fmt(m['latency_ratio_damage'])}); "
                  f"measured at {m['measured_steps']} steps (None = not reached)."]
    if "robustness" in results:
        lines += ["", "Robustness (all images; pull ↓ / damage ↑ after the transform):", "",
                  "| method | none | " + " | ".join(TRANSFORMS) + " |", "|---" * (len(TRANSFORMS) + 2) + "|"]
        for label, per in results["robustness"].items():
            base = results["rows"][label]["summary"]["all"]
            cells = [f"{per[t]['all']['pull']:.3f} / {per[t]['all']['damage']:.4f}" for t in TRANSFORMS]
            lines.append(f"| {label} | {base['pull']:.3f} / {base['damage']:.4f} | " + " | ".join(cells) + " |")
    if "curves" in results:
        lines += ["", "Damage vs LPIPS over η (all images):", "", "| curve | " + " | ".join(f"η={p['eta_levels']:g}" for p in next(iter(results['curves'].values()))) + " |",
                  "|---" * (len(next(iter(results['curves'].values()))) + 1) + "|"]
        for key, points in results["curves"].items():
            lines.append(f"| {key} | " + " | ".join(f"LPIPS {p['lpips']:.4f}, dmg {p['damage']:.4f}" for p in points) + " |")
        keys = list(results["curves"])
        lines += ["", "Damage at equal LPIPS (linear interpolation; '–' = outside that curve's range):", "",
                  "| LPIPS | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for entry in results["equal_lpips"]:
            lines.append(f"| {entry['lpips']:.4f} | " + " | ".join("–" if entry[k] is None else f"{entry[k]:.4f}" for k in keys) + " |")
    for c in results.get("equal_lpips_by_domain", []):
        names = sorted(c["per_domain"])
        lines += ["", f"Per domain at equal LPIPS: **{c['a']}** at η = {c['eta_levels']:g} vs **{c['b']}** interpolated to the same LPIPS "
                  f"(damage A / B; A higher in {c['domains_won']} of {c['domains']} domains):", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        cells = []
        for d in names:
            v = c["per_domain"][d]
            theirs = "–" if v["damage"][1] is None else f"{v['damage'][1]:.4f}"
            cells.append(f"LPIPS {v['lpips']:.3f}: {v['damage'][0]:.4f} / {theirs}")
        lines.append("| damage | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}×"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = evaluate(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    report = markdown(results)
    if args.markdown:
        args.markdown.write_text(report + "\n")
    if args.card:
        from .card import replace_evaluation

        replace_evaluation(args.card, report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
