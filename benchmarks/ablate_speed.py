"""Speed optimisations, each measured before/after in the same run, with its efficacy cost.

    python -m benchmarks.ablate_speed --checkpoint checkpoints/taef2-mixture
    python -m benchmarks.ablate_speed --quick        # smoke run

Each row compares the library's default with an alternative on the same machine in the same run:
time of the stage it affects, and, where the output can change, efficacy on held-out images at their
own size (latent pull and mimic damage through the encoder's decoder, LPIPS invisibility). A cost is
the relative loss of mean mimic damage against the row's reference; issue 6 allows at most 5 % for
anything on by default. Efficacy needs a trained mixture: with a random one the script says so.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import fastprotect  # noqa: F401, I001  (before torch: it sets OMP_WAIT_POLICY, read when torch loads OpenMP)
import torch

from benchmarks.common import (
    DEFAULT_CHECKPOINT, DEFAULT_IMAGES, DEFAULT_WEIGHTS, ENCODERS, build_models, fmt_s, load_average, machine_info,
    machine_line, make_protector, median, parse_size, size_label, test_image_bytes, time_call, emit_report,
)
from benchmarks.efficacy import heldout_paths, load_heldout, make_harness, protect_and_measure
from benchmarks.latency import run_once
from fastprotect.images import load_image, resize_tensor, to_pil


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", choices=ENCODERS, default="taef2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--per-domain", type=int, default=1, help="held-out images per domain for the efficacy columns")
    p.add_argument("--heldout-side", type=int, default=512, help="held-out images are resized to this long side (the decoder is slow on CPU)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per variant (median)")
    p.add_argument("--size", default=None, help="test photo size for the stage timings (default 2048; 512 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 image per domain, 1 run, 512² timings")
    p.add_argument("--only", default=None, help="comma-separated ablation names to run (default: all)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ablate_speed.json")
    p.add_argument("--markdown", type=Path, default=None)
    return p


def cost(reference: dict, variant: dict) -> float | None:
    """Relative loss of mean mimic damage (positive = the variant protects less)."""
    if not reference or not variant or abs(reference["damage"]) < 1e-9:
        return None
    return (reference["damage"] - variant["damage"]) / abs(reference["damage"])


# ------------------------------------------------------------------------------ ablations
def ablate_assign_size(models, args, images, harness) -> dict:
    """Assignment (group + target) on an s×s copy vs on the full-size image."""
    encoder, mixture = models.autoencoder.encoder, models.mixture
    with torch.no_grad():
        full = [(int(mixture.select_target(encoder.encode(x.to(args.device)))[0]), int(mixture.assign(encoder.encode(x.to(args.device)))[0])) for x in images]
    photo = load_image(test_image_bytes(*args.size, images=args.images)).pixels.to(args.device)
    rows = {}
    full_side = max(max(x.shape[-2:]) for x in images)
    for side in (64, 128, 256, full_side):
        with torch.no_grad():
            def encode(side: int = side) -> torch.Tensor:
                return encoder.encode(resize_tensor(photo, side, side))

            seconds = median(time_call(encode, runs=args.runs, device=args.device))
            picks = []
            for x in images:
                z = encoder.encode(resize_tensor(x.to(args.device), side, side))
                picks.append((int(mixture.select_target(z)[0]), int(mixture.assign(z)[0])))
        protector = make_protector(models, args.device, assign_size=side)
        quality, _, _ = protect_and_measure(protector, harness, images) if models.trained else ({}, None, None)
        rows[side] = {"seconds": seconds, "target_agreement": sum(p[0] == f[0] for p, f in zip(picks, full)) / len(full),
                      "group_agreement": sum(p[1] == f[1] for p, f in zip(picks, full)) / len(full),
                      "both_agreement": sum(p == f for p, f in zip(picks, full)) / len(full), "efficacy": quality}
    reference = rows[full_side]["efficacy"]
    for row in rows.values():
        row["damage_cost"] = cost(reference, row["efficacy"])
    return {"name": "assignment on a reduced copy", "reference": f"{full_side}² copy (the held-out images' long side)",
            "default": models.mixture.config.assign_size, "timed_at": size_label(*args.size), "rows": rows}


def ablate_map_size(models, args, images, harness) -> dict:
    """LPIPS visibility map on a copy with long side ≤ s, upsampled, vs at full resolution."""
    photo_bytes = test_image_bytes(*args.size, images=args.images)
    rows = {}
    for side in (128, 256, 512, 100_000):
        protector = make_protector(models, args.device, map_size=side)
        timings = []
        for _ in range(args.runs + 1):
            timings.append(protector.protect(load_image(photo_bytes), compute_metrics=False).info.timings_s["lpips_map"])
        quality, _, _ = protect_and_measure(protector, harness, images) if models.trained else ({}, None, None)
        rows["full" if side == 100_000 else side] = {"seconds": median(timings[1:]), "efficacy": quality}
    for row in rows.values():
        row["damage_cost"] = cost(rows["full"]["efficacy"], row["efficacy"])
    return {"name": "LPIPS map on a reduced copy", "reference": "map at full resolution", "default": 256,
            "timed_at": size_label(*args.size), "rows": rows}


def ablate_grad_mode(models, args) -> dict:
    """The network stages (assignment encode at 128², LPIPS map at 256²) under no_grad vs inference_mode."""
    encoder, perceptual = models.autoencoder.encoder, models.perceptual
    side = 64 if args.encoder == "dummy" else 256
    x = load_image(test_image_bytes(side, side, images=args.images)).pixels.to(args.device)
    y = (x + 4 / 255).clamp(0, 1)
    small = resize_tensor(x, side // 2, side // 2)

    def work() -> torch.Tensor:
        return encoder.encode(small).float().sum() + perceptual.spatial_map(x, y).float().sum()

    rows = {}
    for name, context in (("no_grad (library)", torch.no_grad), ("inference_mode", torch.inference_mode)):
        with context():
            rows[name] = {"seconds": median(time_call(work, runs=max(5, args.runs * 4), device=args.device)), "value": float(work())}
    same = rows["no_grad (library)"]["value"] == rows["inference_mode"]["value"]
    return {"name": "torch.inference_mode", "reference": "no_grad", "rows": rows, "identical_output": same}


def ablate_channels_last(models, args) -> dict:
    """Encoder and LPIPS in channels-last memory format vs contiguous, end to end at the test size."""
    data = test_image_bytes(*args.size, images=args.images)
    rows, outputs = {}, {}
    for name, fmt in (("contiguous (library)", torch.contiguous_format), ("channels_last", torch.channels_last)):
        models.autoencoder.encoder.to(memory_format=fmt)
        models.perceptual.to(memory_format=fmt)
        protector = make_protector(models, args.device)
        runs = [run_once(protector, data, args.device) for _ in range(args.runs + 1)][1:]
        rows[name] = {"seconds": median([r["total"] for r in runs]), "assign": median([r["assign"] for r in runs]),
                      "lpips_map": median([r["lpips_map"] for r in runs])}
        outputs[name] = protector.protect(load_image(data), compute_metrics=False).image
    models.autoencoder.encoder.to(memory_format=torch.contiguous_format)
    models.perceptual.to(memory_format=torch.contiguous_format)
    levels = int(((outputs["channels_last"] - outputs["contiguous (library)"]).abs().max() * 255).round())
    return {"name": "channels-last", "reference": "contiguous", "timed_at": size_label(*args.size), "rows": rows,
            "max_output_difference_levels": levels}


def ablate_half(models, args, images, harness) -> dict | None:
    """fp16 encoder and LPIPS on the GPU vs fp32 (skipped on CPU)."""
    if not args.device.startswith("cuda"):
        return {"name": "half precision (GPU)", "skipped": "CPU run: fp16 is a GPU option (unmeasured here)"}
    data = test_image_bytes(*args.size, images=args.images)
    rows = {}
    for name in ("fp32", "fp16"):
        if name == "fp16":
            models.autoencoder.encoder.half()
            models.perceptual.half()
        protector = make_protector(models, args.device)
        runs = [run_once(protector, data, args.device) for _ in range(args.runs + 1)][1:]
        quality, _, _ = protect_and_measure(protector, harness, images) if models.trained else ({}, None, None)
        rows[name] = {"seconds": median([r["total"] for r in runs]), "efficacy": quality}
    models.autoencoder.encoder.float()
    models.perceptual.float()
    rows["fp16"]["damage_cost"] = cost(rows["fp32"]["efficacy"], rows["fp16"]["efficacy"])
    return {"name": "half precision (GPU)", "reference": "fp32", "timed_at": size_label(*args.size), "rows": rows}


def ablate_batching(models, args, batch: int = 8) -> dict:
    """The network stages for ``batch`` images: one batch vs one image at a time (seconds per image)."""
    encoder, perceptual = models.autoencoder.encoder, models.perceptual
    generator = torch.Generator().manual_seed(0)
    side = 64 if args.encoder == "dummy" else 256
    xs = torch.rand(batch, 3, side, side, generator=generator).to(args.device)
    ys = (xs + 4 / 255).clamp(0, 1)
    small = resize_tensor(xs, side // 2, side // 2)

    def one_by_one() -> None:
        for i in range(batch):
            encoder.encode(small[i : i + 1])
            perceptual.spatial_map(xs[i : i + 1], ys[i : i + 1])

    def batched() -> None:
        encoder.encode(small)
        perceptual.spatial_map(xs, ys)

    with torch.no_grad():
        rows = {"one at a time (library)": {"seconds_per_image": median(time_call(one_by_one, runs=args.runs, device=args.device)) / batch},
                f"batch of {batch}": {"seconds_per_image": median(time_call(batched, runs=args.runs, device=args.device)) / batch}}
    return {"name": "batching (network stages)", "reference": "one at a time", "rows": rows}


def ablate_warmup(args) -> dict:
    """Start-up: model load, the first protection in a fresh process's models, and steady state (512²)."""
    start = time.perf_counter()
    models = build_models(args.encoder, args.checkpoint, weights=args.weights, device=args.device)
    protector = make_protector(models, args.device)
    load_s = time.perf_counter() - start
    data = test_image_bytes(512, 512, images=args.images)
    first = run_once(protector, data, args.device)["total"]
    steady = median([run_once(protector, data, args.device)["total"] for _ in range(args.runs)])
    return {"name": "model warm-up at start-up", "reference": "cold first call", "rows": {
        "model load": {"seconds": load_s}, "first call (cold)": {"seconds": first}, "steady state": {"seconds": steady}}}


def ablate_threads(models, args) -> dict:
    """torch CPU threads: 1 vs the machine's default, end to end at 512², runs interleaved so both
    see the same background load (OpenMP barriers suffer badly when other processes take the cores)."""
    if args.device.startswith("cuda"):
        return {"name": "torch CPU threads", "skipped": "GPU run"}
    data = test_image_bytes(512, 512, images=args.images)
    protector = make_protector(models, args.device)
    before = torch.get_num_threads()
    counts = sorted({1, args.default_threads})
    times: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(args.runs + 1):
        for n in counts:
            torch.set_num_threads(n)
            times[n].append(run_once(protector, data, args.device)["total"])
    torch.set_num_threads(before)
    return {"name": "torch CPU threads", "reference": f"{args.default_threads} (torch default)", "timed_at": "512²",
            "rows": {n: {"seconds": median(t[1:])} for n, t in times.items()}, "load_average": load_average()}


def ablate_png(models, args) -> dict:
    """PNG zlib compress level of the protected image: encode time and file size."""
    data = test_image_bytes(*args.size, images=args.images)
    loaded = load_image(data)
    protected = make_protector(models, args.device).protect(loaded, compute_metrics=False).image
    image = to_pil(loaded, protected)
    rows = {}
    for level in (0, 1, 3, 6, 9):
        sizes: list[int] = []

        def encode(level: int = level, sizes: list[int] = sizes) -> None:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=level)
            sizes.append(buffer.tell())

        rows[level] = {"seconds": median(time_call(encode, runs=max(1, args.runs // 2 + 1), warmup=0)), "megabytes": sizes[-1] / 1e6}
    return {"name": "PNG compress level", "reference": "Pillow default 6", "timed_at": size_label(*args.size), "rows": rows}


# ------------------------------------------------------------------------------- reporting
def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f} %"


def eff(row: dict) -> str:
    e = row.get("efficacy") or {}
    return f"{e['pull']:.3f} / {e['damage']:.4f} / {e['lpips']:.4f}" if e else "–"


def table_block(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A caption, a markdown table and a blank line, as report lines."""
    return [title, "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|", *("| " + " | ".join(r) + " |" for r in rows), ""]


def markdown(results: dict) -> str:
    a = results["ablations"]
    lines = [f"Machine: {machine_line(results['machine'])}.", (f"Encoder {results['encoder']}; mixture: {results['mixture']}; "
             f"held-out images: {results['heldout']['count']} ({results['heldout']['origin']}); load average at the end {results['load_average_end']}."), ""]
    if not results["trained"]:
        lines += ["**Efficacy columns are empty: the mixture is random (no trained checkpoint), so there is no efficacy to lose.**", ""]
    if "assign_size" in a:
        s = a["assign_size"]
        lines += table_block(
            f"**{s['name']}** (encode time at {s['timed_at']} photo; agreement with the full-size assignment; efficacy pull ↓ / damage ↑ / LPIPS ↓; "
            f"cost vs {s['reference']}). Default: {s['default']}².",
            ["assign size", "encode s", "target agree", "group agree", "both", "pull / damage / LPIPS", "damage cost"],
            [[f"{side}²", fmt_s(row["seconds"]), f"{row['target_agreement']:.0%}", f"{row['group_agreement']:.0%}", f"{row['both_agreement']:.0%}",
              eff(row), pct(row["damage_cost"])] for side, row in s["rows"].items()])
    if "map_size" in a:
        m = a["map_size"]
        lines += table_block(
            f"**{m['name']}** (lpips_map stage at {m['timed_at']}; cost vs {m['reference']}). Default: {m['default']}.",
            ["map long side", "lpips_map s", "pull / damage / LPIPS", "damage cost"],
            [[str(side), fmt_s(row["seconds"]), eff(row), pct(row["damage_cost"])] for side, row in m["rows"].items()])
    if "grad_mode" in a:
        g = a["grad_mode"]
        lines.append(f"**{g['name']}** (assign encode + LPIPS map; identical output: {g['identical_output']}): "
                     + ", ".join(f"{k} {fmt_s(v['seconds'])} s" for k, v in g["rows"].items()) + ".")
    if "channels_last" in a:
        c = a["channels_last"]
        lines.append(f"**{c['name']}** (end to end at {c['timed_at']}; largest output difference {c['max_output_difference_levels']} levels): "
                     + ", ".join(f"{k} {fmt_s(v['seconds'])} s (assign {fmt_s(v['assign'])}, lpips_map {fmt_s(v['lpips_map'])})" for k, v in c["rows"].items()) + ".")
    if "half" in a:
        h = a["half"]
        if "skipped" in h:
            lines.append(f"**{h['name']}**: {h['skipped']}.")
        else:
            lines.append(f"**{h['name']}** (end to end at {h['timed_at']}): " + ", ".join(f"{k} {fmt_s(v['seconds'])} s, {eff(v)}" for k, v in h["rows"].items())
                         + f"; damage cost {pct(h['rows']['fp16'].get('damage_cost'))}.")
    if "batching" in a:
        b = a["batching"]
        lines.append(f"**{b['name']}**: " + ", ".join(f"{k} {fmt_s(v['seconds_per_image'])} s/image" for k, v in b["rows"].items()) + ".")
    if "warmup" in a:
        w = a["warmup"]
        lines.append(f"**{w['name']}** (512²): " + ", ".join(f"{k} {fmt_s(v['seconds'])} s" for k, v in w["rows"].items()) + ".")
    t = a.get("threads", {})
    if "rows" in t:
        lines.append(f"**{t['name']}** (end to end at {t['timed_at']}, interleaved runs, load {t['load_average']}): "
                     + ", ".join(f"{n} thread(s) {fmt_s(v['seconds'])} s" for n, v in t["rows"].items()) + ".")
    if "png" in a:
        p = a["png"]
        lines += ["", f"**{p['name']}** ({p['timed_at']} protected image; lossless, no efficacy cost):", "", "| level | encode s | MB |", "|---|---|---|"]
        for level, row in p["rows"].items():
            lines.append(f"| {level}{' (Pillow default)' if int(level) == 6 else ''} | {fmt_s(row['seconds'])} | {row['megabytes']:.1f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    args.default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    wall = time.perf_counter()
    machine = machine_info(args.device)
    only = set(args.only.split(",")) if args.only else None
    warmup = ablate_warmup(args) if not only or "warmup" in only else None  # first: the process's first protection is the cold one
    models = build_models(args.encoder, args.checkpoint, weights=args.weights, device=args.device)
    paths, origin = heldout_paths(args.checkpoint, args.per_domain, images=args.images)
    images = load_heldout(paths, long_side=64 if args.encoder == "dummy" else args.heldout_side)
    if not images:  # no shared images on this machine: one synthetic photo
        images, origin = [load_image(test_image_bytes(64, 64, images=args.images)).pixels], "one synthetic image"
    harness = make_harness(models, args.device)
    results = {"machine": machine, "encoder": args.encoder, "mixture": models.mixture_source, "trained": models.trained,
               "heldout": {"count": len(images), "origin": origin, "files": [str(p) for p in paths]}, "ablations": {"warmup": warmup} if warmup else {}}
    steps = [("assign_size", lambda: ablate_assign_size(models, args, images, harness)),
             ("map_size", lambda: ablate_map_size(models, args, images, harness)),
             ("grad_mode", lambda: ablate_grad_mode(models, args)),
             ("channels_last", lambda: ablate_channels_last(models, args)),
             ("half", lambda: ablate_half(models, args, images, harness)),
             ("batching", lambda: ablate_batching(models, args)),
             ("png", lambda: ablate_png(models, args)),
             ("threads", lambda: ablate_threads(models, args))]
    for name, step in steps:
        if only and name not in only:
            continue
        results["ablations"][name] = step()
        print(f"[{time.perf_counter() - wall:5.0f}s] {name} done (load {load_average()})", flush=True)
    results["load_average_end"] = load_average()
    results["wall_s"] = time.perf_counter() - wall
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.per_domain, args.runs = 1, 1
    args.size = parse_size(args.size or ("512" if args.quick else "2048"))
    results = run(args)
    return emit_report(results, markdown(results), args.out, args.markdown)


if __name__ == "__main__":
    raise SystemExit(main())
