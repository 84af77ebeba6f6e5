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

This module is the orchestration (arguments and the run). The measures are
``fastprotect.evaluation`` (the harness the benchmarks share), the comparisons ``train/compare.py``
and the report ``train/report.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from fastprotect.evaluation import TRANSFORMS, Harness, Reference, summarise, transform
from fastprotect.vocabulary import DEFAULT_ETA_LEVELS, MAX_ETA_LEVELS, TARGET_NAMES, eta_from_levels

from . import data
from .compare import compare, equal_lpips, equal_lpips_by_domain
from .report import markdown


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
    p.add_argument("--eta", type=float, default=float(DEFAULT_ETA_LEVELS), help="budget in 8-bit levels")
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
    if not all(1 <= levels <= MAX_ETA_LEVELS for levels in [args.eta, *args.curve_etas]):
        parser.error(f"--eta and --curve-etas are budgets in 8-bit levels between 1 and {MAX_ETA_LEVELS}")
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


def run_pgd(reference: Reference, encoder, targets: torch.Tensor, target_images: torch.Tensor, *, eta: float, steps: list[int],
            on_checkpoint: Callable[[int, torch.Tensor, float], None]) -> None:
    """Per-image PGD from δ = 0 (step η/4, the library default), measured after each count in ``steps``.

    Runs as one batch per target; seconds per image = batch time / batch size (favours PGD a little:
    a batch uses the cores better than one image would).
    """
    from fastprotect.losses import encode_target
    from fastprotect.pgd import pgd_perturb
    from fastprotect.strength import quantise_within_budget

    x = reference.images
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
    harness = Harness(autoencoder, perceptual, target_images)
    reference = harness.reference(images)
    eta = eta_from_levels(args.eta)
    results: dict = {"images": [e.path for e in chosen], "domains": domains, "size": args.size, "eta_levels": args.eta, "rows": {}, "notes": []}
    protectors: dict[str, object] = {}

    def protector_for(path: Path):
        if str(path) not in protectors:
            mixture = full if Path(path) == args.checkpoint else MixtureOfPerturbations.from_pretrained(path)
            protectors[str(path)] = Protector(autoencoder, mixture=mixture, perceptual=perceptual, assign_size=mixture.config.assign_size)
        return protectors[str(path)]

    def record(label: str, protected: torch.Tensor, targets: torch.Tensor, seconds: float, extra: dict | None = None) -> dict:
        per_image = harness.measure(reference, protected, targets)
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

    run_pgd(reference, autoencoder.encoder, full_targets, target_images, eta=eta, steps=args.pgd_steps, on_checkpoint=on_pgd)
    ours = results["rows"]["full (final) + adaptive strength"]
    matched = next((c for c in args.pgd_steps if pgd_trace[c]["summary"]["all"]["pull"] <= ours["summary"]["all"]["pull"]), None)
    matched_damage = next((c for c in args.pgd_steps if pgd_trace[c]["summary"]["all"]["damage"] >= ours["summary"]["all"]["damage"]), None)
    results["pgd_match"] = {
        "reference": "full (final) + adaptive strength",
        "steps_matching_pull": matched,
        "latency_ratio_pull": (pgd_trace[matched]["latency_s"] / ours["latency_s"]) if matched else None,
        "steps_matching_damage": matched_damage,
        "latency_ratio_damage": (pgd_trace[matched_damage]["latency_s"] / ours["latency_s"]) if matched_damage else None,
        "measured_steps": args.pgd_steps,
    }

    # robustness: the first ablation row (UAP when given), the full method, and the strongest reported PGD
    if not args.no_robustness:
        candidates = ([args.rows[0]["label"]] if args.rows else []) + ["full (final) + adaptive strength"]
        robust_rows = {label: outputs[label] for label in candidates}
        robust_rows[f"PGD {max(args.pgd_report)} steps"] = (pgd_images[max(args.pgd_report)], full_targets)
        results["robustness"] = {}
        for name in TRANSFORMS:
            noise_seed = torch.Generator().manual_seed(args.seed + 7)
            clean_t = transform(images, name, noise_seed)
            for label, (protected, targets) in robust_rows.items():
                noise_seed = torch.Generator().manual_seed(args.seed + 7)
                per_image = harness.efficacy(reference, transform(protected, name, noise_seed), targets, seen_clean=clean_t)
                results["robustness"].setdefault(label, {})[name] = summarise(per_image, domains)
            print(f"[{time.perf_counter() - wall:6.0f}s] robustness {name} done", flush=True)

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
                protected, targets, seconds = run_mixture(protector_for(path), images, eta=eta_from_levels(levels), target="auto", adaptive=adaptive)
                per_image = harness.measure(reference, protected, targets)
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
