"""Protection latency by stage, peak memory, and the per-image PGD baseline on the same encoder.

    python -m benchmarks.latency                      # CPU, the default generator, 512² … 4096×3072, 5 runs
    python -m benchmarks.latency --checkpoint checkpoints/taef2-mixture   # the mixture
    python -m benchmarks.latency --device cuda        # the GPU path, fp16 network (--no-half: fp32)
    python -m benchmarks.latency --quick              # smoke run: small sizes, 1 run
    python -m benchmarks.latency --sizes 4096x3072,7296x5472 --runs 1 --no-pgd   # the memory goals (12 MP, 40 MP)

Every goal of issue 31 that the run measured is printed at the end as met or not met, with the number.

End to end, as ``python -m fastprotect`` does each image = decode (JPEG bytes -> 8-bit levels,
``images.load_image(levels=True)``) + ``Protector.protect`` (no budget map kept; its own
stage timers: assign, select, resize, lpips_map, compose; "other" is what protect spends outside
them) + encode (``images.png_bytes``). The UI's invisibility metrics are measured separately: they
are not part of protection. Median of ``--runs`` runs after ``--warmup`` untimed runs; "peak mem" is
the peak RSS of this process during the timed runs of that size (CPU: models, and heap earlier sizes
left behind, included) or the peak allocated CUDA memory (GPU).

The memory goals are the peak RSS of the command line's own process for one image of the size
(``cli_peak_rss_bytes``: the command line's ``main`` run in a child process, which reports its own
VmHWM: Python, torch, the models and the image together, as ``/usr/bin/time -v`` reports it),
measured on Linux's CPU when the checkpoint is a folder (``--no-cli-memory`` skips it).

The PGD baseline is the library's own encoder attack (``fastprotect.pgd.pgd_perturb``, the code
per-image mode and refinement run) on the same encoder at ``--pgd-size``²: seconds per step, times
the step count that matches our efficacy, and times PhotoGuard's default 200 steps. The matching
step count comes from ``--pgd-match-steps``, else from the evaluation's JSON (``eval.json`` in or
above the checkpoint folder, key ``pgd_match``), else from ``--measure-match``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import fastprotect  # noqa: F401, I001  (before torch: it sets OMP_WAIT_POLICY, read when torch loads OpenMP)
import torch

from benchmarks.common import (
    ROOT as REPO_ROOT, DEFAULT_IMAGES, DEFAULT_WEIGHTS, ENCODERS, PAPER_TABLE2, PHOTOGUARD_STEPS, PeakMemory, build_models,
    fmt_s, load_average, machine_info, machine_line, make_protector, median, parse_size, size_label,
    synchronize, test_image_bytes, emit_report,
)
from fastprotect.images import load_image, png_bytes, resize_tensor
from fastprotect.vocabulary import DEFAULT_ETA

DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "taef2-generator"  # the default method
DEFAULT_SIZES = "512,1024,2048,4096x3072"
# "network", "generate": the generator (its network on a bounded copy; the full-resolution budget, upsampling, cap and
# composition); "assign" … "compose": the mixture
PIPELINE_STAGES = ("network", "generate", "assign", "select", "resize", "lpips_map", "compose")
STAGES = ("decode", *PIPELINE_STAGES, "other", "encode_png")  # the columns; they sum to "total"
# Goals of issue 31: seconds (end to end, median, idle 2-core CPU) and peak RSS in bytes; on a GPU, protect() alone.
CPU_TARGETS = {"512²": 0.05, "1024²": 0.15, "2048²": 0.4, "4096×3072": 1.0}
CPU_MEMORY_TARGET = {"4096×3072": 1 * 2**30, "7296×5472": 1.5 * 2**30}  # 12.6 MP and 40 MP, through the CLI
GPU_TARGETS = {"512²": 0.010}
SPEEDUP_TARGET = 100.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", choices=ENCODERS, default="taef2", help="taef2 (real weights), sd-vae-random (SD-1.5 sized), dummy (tests)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--half", action=argparse.BooleanOptionalAction, default=None,
                   help="fp16 network, encoder and LPIPS (the default on --device cuda; CPU: fp32 only)")
    p.add_argument("--sizes", default=None, help=f"comma-separated, e.g. 512,2048,4096x3072 (default {DEFAULT_SIZES})")
    p.add_argument("--runs", type=int, default=None, help="timed runs per size (default 5; median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per size first")
    p.add_argument("--quick", action="store_true", help="smoke run: 256 and 512, 1 run, 1 PGD step timed, no match search")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                   help="generator or mixture folder (default: the generator); a random mixture of the same shape when absent")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="folder with taef2_*.pth and alexnet_lpips_features.safetensors")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="shared image folders (test photo, held-out images)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-pgd", action="store_true", help="skip the PGD baseline")
    p.add_argument("--cli-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the command line once per size and read its process's peak RSS (CPU, checkpoint folder)")
    p.add_argument("--pgd-size", type=int, default=512, help="side of the square image the PGD baseline attacks")
    p.add_argument("--pgd-steps-timed", type=int, default=None, help="PGD steps timed (default 3; median step time)")
    p.add_argument("--pgd-match-steps", type=int, default=None,
                   help="PGD step count that matches our efficacy, if known (default: pgd_match in the evaluation's eval.json)")
    p.add_argument("--measure-match", action="store_true",
                   help="measure the matching step count here on held-out images at 256² (needs a trained checkpoint)")
    p.add_argument("--match-images", type=int, default=1, help="held-out images per domain for --measure-match")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency.json", help="JSON results")
    p.add_argument("--markdown", type=Path, default=None, help="also write the markdown tables here")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or "256,512"
        args.runs = args.runs or 1
        args.pgd_steps_timed = args.pgd_steps_timed or 1
    args.sizes = [parse_size(s) for s in (args.sizes or DEFAULT_SIZES).split(",") if s]
    args.runs = args.runs or 5
    args.pgd_steps_timed = args.pgd_steps_timed or 3
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    if args.half and not args.device.startswith("cuda"):
        parser.error("--half is for --device cuda (fp16 convolutions on CPU are slower than fp32)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda asks for a GPU, but torch sees no CUDA device on this machine, so the GPU benchmark "
              "was not run.", file=sys.stderr)
        raise SystemExit(2)
    if args.half is None:
        args.half = args.device.startswith("cuda")
    return args


# ------------------------------------------------------------------------------ measuring
def run_once(protector, data: bytes, device: str) -> dict[str, float]:
    """One end-to-end protection of JPEG ``data``; seconds per stage and in total."""
    start, cpu = time.perf_counter(), time.process_time()
    loaded = load_image(data, levels=True)  # as the command line: 8-bit levels, no budget map (nobody shows it)
    decoded = time.perf_counter()
    result = protector.protect(loaded, compute_metrics=False, keep_budget_map=False)
    synchronize(device)
    protected = time.perf_counter()
    png_bytes(loaded, result.image)
    end = time.perf_counter()
    stages = {"decode": decoded - start}
    stages.update({name: result.info.timings_s.get(name, 0.0) for name in PIPELINE_STAGES})
    stages["other"] = max(0.0, (protected - decoded) - sum(stages[name] for name in PIPELINE_STAGES))
    stages["encode_png"] = end - protected
    stages["total"] = end - start
    stages["protect"] = protected - decoded  # Protector.protect alone: no file decode / PNG encode
    stages["cpu"] = time.process_time() - cpu  # CPU seconds of all this process's threads
    return stages


def measure_size(protector, width: int, height: int, args: argparse.Namespace) -> dict:
    data = test_image_bytes(width, height, images=args.images)
    memory = PeakMemory(args.device)
    for _ in range(args.warmup):
        run_once(protector, data, args.device)
    memory.reset()
    runs = [run_once(protector, data, args.device) for _ in range(args.runs)]
    peak = memory.read()
    # the UI's invisibility metrics (PSNR, SSIM and LPIPS on a ≤1024 copy): one run, not in the total
    loaded = load_image(data)
    metrics_s = protector.protect(loaded).info.timings_s.get("metrics", float("nan"))
    row = {name: median([r[name] for r in runs]) for name in (*STAGES, "total", "protect", "cpu")}
    cli = {}
    if args.cli_memory and not args.device.startswith("cuda") and Path(args.checkpoint).is_dir() and Path("/proc/self/status").is_file():
        cli_peak, cli_seconds = cli_peak_memory(data, width, height, args.checkpoint)
        cli = {"cli_peak_rss_bytes": cli_peak, "cli_seconds": cli_seconds}
    return {**cli,
        "size": size_label(width, height), "width": width, "height": height, "runs": len(runs),
        "median_s": row, "min_total_s": min(r["total"] for r in runs), "max_total_s": max(r["total"] for r in runs),
        "all_totals_s": [r["total"] for r in runs], "metrics_s": metrics_s,
        "peak_memory_bytes": peak, "peak_memory_kind": "cuda max_memory_allocated" if args.device.startswith("cuda")
        else ("peak RSS (VmHWM, reset per size)" if memory.resettable else "process peak RSS (ru_maxrss, not resettable)"),
        "load_average_after": load_average(),
    }


# The command line in a child process that writes its own peak RSS (VmHWM) to the file named first. A child's
# ru_maxrss from wait4 would not do: Linux carries the parent's peak over into it through fork and exec.
_CLI_CHILD = """import sys
from pathlib import Path
from fastprotect.cli import main
code = main(sys.argv[2:])
peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
Path(sys.argv[1]).write_text(peak.split()[1])
sys.exit(code)
"""


def cli_peak_memory(data: bytes, width: int, height: int, checkpoint: str) -> tuple[int, float]:
    """(peak RSS in bytes, wall seconds) of ``python -m fastprotect`` protecting ``data`` (an image of width × height)
    in a child process of its own: its VmHWM at the end (Linux), what ``/usr/bin/time -v`` reports as its maximum
    resident set size."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        image, peak = Path(folder) / "photo.jpg", Path(folder) / "peak_kb"
        image.write_bytes(data)
        command = [sys.executable, "-c", _CLI_CHILD, str(peak), str(image), "-o", str(Path(folder) / "out"),
                   "--checkpoint", str(Path(checkpoint).resolve()), "--max-pixels", str(width * height)]
        start = time.perf_counter()
        child = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        seconds = time.perf_counter() - start
        if child.returncode != 0 or not peak.is_file():
            raise RuntimeError(f"the command line failed ({child.returncode}): {child.stderr.decode(errors='replace').strip()[-500:]}")
        return int(peak.read_text()) * 1024, seconds


def pgd_step_times(models, args: argparse.Namespace) -> list[float]:
    """Seconds of each of ``--pgd-steps-timed`` PGD steps (after one untimed step) at ``--pgd-size``²."""
    from fastprotect.losses import encode_target
    from fastprotect.pgd import pgd_perturb

    size = args.pgd_size
    x = load_image(test_image_bytes(size, size, images=args.images)).pixels.to(args.device)
    encoder = models.autoencoder.encoder
    target = encode_target(encoder, models.mixture.target_images_float()[1:2].to(args.device), size, size)
    generator = torch.Generator().manual_seed(0)
    pgd_perturb(encoder, x, target, eta=DEFAULT_ETA, steps=1, random_start=True, generator=generator)  # warm-up
    marks: list[float] = []

    def tick(step: int, total: int) -> None:
        synchronize(args.device)
        marks.append(time.perf_counter())

    synchronize(args.device)
    start = time.perf_counter()
    pgd_perturb(encoder, x, target, eta=DEFAULT_ETA, steps=args.pgd_steps_timed, random_start=True, generator=generator, progress=tick)
    edges = [start, *marks]
    return [b - a for a, b in itertools.pairwise(edges)]


def evaluation_json(checkpoint: str | None) -> Path | None:
    """The evaluation results ``python -m train.evaluate --out`` wrote for ``checkpoint`` (in its folder or the one above)."""
    if not checkpoint:
        return None
    return next((p for p in (Path(checkpoint) / "eval.json", Path(checkpoint).parent / "eval.json") if p.is_file()), None)


def matched_steps_from_evaluation(checkpoint: str | None) -> tuple[int | None, str]:
    """The PGD step count that matched the full method's mimic damage (else pull) in the evaluation,
    read from its JSON (``pgd_match``), never from prose; (None, why) when there is none."""
    path = evaluation_json(checkpoint)
    if path is None:
        return None, (f"no evaluation results: no eval.json in or above {checkpoint} (write one with "
                      "`python -m train.evaluate ... --out CHECKPOINT/eval.json`, or pass --pgd-match-steps / --measure-match)")
    match = json.loads(path.read_text()).get("pgd_match") or {}
    for key in ("steps_matching_damage", "steps_matching_pull"):
        if match.get(key):
            return int(match[key]), f"{path} ({key})"
    return None, f"{path}: pgd_match has no step count that matched (PGD never reached the full method at the measured steps)"


def measure_match(models, args: argparse.Namespace) -> tuple[int | None, str, dict]:
    """Smallest PGD step count whose mean mimic damage on held-out 256² images reaches ours."""
    from benchmarks.efficacy import (
        heldout_paths,
        load_heldout,
        make_harness,
        pgd_curve,
        protect_and_measure,
    )

    paths, origin = heldout_paths(args.checkpoint, args.match_images, images=args.images)
    images = [(resize_tensor(x, 256, 256).clamp(0, 1) * 255).round() / 255 for x in load_heldout(paths)]
    protector = make_protector(models, args.device)
    harness = make_harness(models, args.device)
    ours, _, targets = protect_and_measure(protector, harness, images)
    curve = pgd_curve(harness, images, targets, [1, 2, 3, 5, 10, 20, 50], stop_at_damage=ours["damage"])
    steps = next((c for c, row in sorted(curve.items()) if row["damage"] >= ours["damage"]), None)
    return steps, f"measured here on {len(images)} held-out images at 256² ({origin}), matching mimic damage", {"ours": ours, "pgd": curve}


def pgd_baseline(models, args: argparse.Namespace, ours_s: float | None) -> dict:
    steps = pgd_step_times(models, args)
    per_step = median(steps)
    matched, source = (args.pgd_match_steps, "--pgd-match-steps") if args.pgd_match_steps else matched_steps_from_evaluation(args.checkpoint)
    detail = None
    if matched is None and args.measure_match:
        if models.trained:
            matched, source, detail = measure_match(models, args)
        else:
            source += "; not measured: a random mixture has no efficacy to match (pass a trained --checkpoint)"
    out = {"size": args.pgd_size, "per_step_s": per_step, "step_times_s": steps, "matched_steps": matched,
           "matched_source": source, "match_detail": detail, "photoguard_steps": PHOTOGUARD_STEPS,
           "ours_s": ours_s}
    for label, count in (("matched", matched), ("photoguard", PHOTOGUARD_STEPS), ("one_step", 1)):
        if count:
            seconds = per_step * count
            out[f"{label}_s"] = seconds
            out[f"{label}_ratio"] = seconds / ours_s if ours_s else None
    return out


# ------------------------------------------------------------------------------- reporting
def targets_for(device: str) -> dict[str, float]:
    return GPU_TARGETS if device.startswith("cuda") else CPU_TARGETS


def verdicts(results: dict) -> list[dict]:
    """Every issue-6 target that this run measured: met or missed, with the number."""
    out = []
    rows = {row["size"]: row for row in results["sizes"]}
    gpu = results["machine"]["device"].startswith("cuda")
    for size, limit in targets_for(results["machine"]["device"]).items():
        if size in rows:
            # GPU targets are for the protection on the GPU; decoding and PNG encoding run on the CPU
            value = rows[size]["median_s"]["protect" if gpu else "total"]
            what = "protect() on the GPU" if gpu else "end to end"
            out.append({"target": f"{size} {what} ≤ {fmt_s(limit)} s", "measured": f"{fmt_s(value)} s", "met": value <= limit})
    if not results["machine"]["device"].startswith("cuda"):
        for size, limit in CPU_MEMORY_TARGET.items():
            if size in rows:  # the goal is the command line's process; without that run, this process's peak
                cli = "cli_peak_rss_bytes" in rows[size]
                value = rows[size]["cli_peak_rss_bytes" if cli else "peak_memory_bytes"]
                what = "peak RSS of the command line's process" if cli else "peak RSS"
                out.append({"target": f"{size} {what} ≤ {limit / 2**30:g} GB", "measured": f"{value / 2**30:.2f} GB", "met": value <= limit})
    pgd = results.get("pgd")
    if pgd and pgd.get("matched_ratio"):
        out.append({"target": f"≥ {SPEEDUP_TARGET:.0f}× faster than per-image PGD at equal efficacy",
                    "measured": f"{pgd['matched_ratio']:.0f}× ({pgd['matched_steps']} steps)", "met": pgd["matched_ratio"] >= SPEEDUP_TARGET})
    return out


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Machine: {machine_line(m)}.", (f"Encoder: {results['encoder']}; mixture: {results['mixture']}; "
             f"median of {results['runs']} runs after {results['warmup']} warm-up; load average at the end {results['load_average_end']}."), "",
             "Seconds per stage (median):", "",
             "| size | " + " | ".join(STAGES) + " | **total** | min–max total | protect only | CPU s | peak mem | metrics (UI, not in total) |",
             "|---" * (len(STAGES) + 7) + "|"]
    for row in results["sizes"]:
        med = row["median_s"]
        lines.append(f"| {row['size']} | " + " | ".join(fmt_s(med[s]) for s in STAGES) + f" | **{fmt_s(med['total'])}** | "
                     f"{fmt_s(row['min_total_s'])}–{fmt_s(row['max_total_s'])} | {fmt_s(med['protect'])} | {fmt_s(med['cpu'])} | {row['peak_memory_bytes'] / 2**30:.2f} GB | {fmt_s(row['metrics_s'])} |")
    cli_rows = [row for row in results["sizes"] if "cli_peak_rss_bytes" in row]
    if cli_rows:
        lines += ["", "The command line, one image in a process of its own (`python -m fastprotect IMAGE -o FOLDER`): "
                  + ", ".join(f"{row['size']} peak RSS {row['cli_peak_rss_bytes'] / 2**30:.2f} GB in {fmt_s(row['cli_seconds'])} s"
                              for row in cli_rows) + " (start-up and model loading included)."]
    lines += ["", "Throughput, one image at a time, end to end: " + ", ".join(f"{k} {v:.2f} images/s" for k, v in results.get("throughput_images_per_s", {}).items()) + "."]
    pgd = results.get("pgd")
    if pgd:
        lines += ["", (f"Per-image PGD baseline (fastprotect.pgd, same encoder, {pgd['size']}², fp32 autograd): "
                  f"{fmt_s(pgd['per_step_s'])} s per step (median of {len(pgd['step_times_s'])}); ours end to end at that size: {fmt_s(pgd['ours_s'])} s."), "",
                  "| PGD steps | PGD seconds | ours seconds | ratio (PGD / ours) |", "|---|---|---|---|"]
        for label, name in (("one_step", "1 (one step)"), ("matched", f"{pgd['matched_steps']} (equal efficacy)"), ("photoguard", f"{PHOTOGUARD_STEPS} (PhotoGuard default)")):
            if f"{label}_s" in pgd:
                ratio = pgd.get(f"{label}_ratio")
                lines.append(f"| {name} | {fmt_s(pgd[f'{label}_s'])} | {fmt_s(pgd['ours_s'])} | {'–' if ratio is None else f'{ratio:.0f}×'} |")
        if not pgd.get("matched_steps"):
            lines.append(f"| equal efficacy | – | – | – ({pgd['matched_source']}) |")
        else:
            lines += ["", f"Equal-efficacy step count from: {pgd['matched_source']}."]
    lines += ["", "Paper, Table 2 (512²), seconds A100 / CPU: " + "; ".join(f"{k} {a:g} / {c:g}" for k, (a, c) in PAPER_TABLE2.items()) + "."]
    if results.get("verdicts"):
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {v['target']} | {v['measured']} | {'yes' if v['met'] else '**no**'} |" for v in results["verdicts"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    wall = time.perf_counter()
    machine = machine_info(args.device)
    models = build_models(args.encoder, args.checkpoint, weights=args.weights, device=args.device, half=args.half)
    if args.half and models.generator is not None:  # its network in fp16; the full-resolution steps stay fp32
        models.generator.half()
    protector = make_protector(models, args.device)
    results: dict = {"machine": machine, "encoder": args.encoder + (" fp16" if args.half else ""), "mixture": models.mixture_source,
                     "runs": args.runs, "warmup": args.warmup, "sizes": [], "command": " ".join(sys.argv),
                     "throughput_images_per_s": {}}
    for width, height in args.sizes:
        row = measure_size(protector, width, height, args)
        results["sizes"].append(row)
        results["throughput_images_per_s"][row["size"]] = 1 / row["median_s"]["total"]  # one image at a time, end to end
        cli = f", command line's peak {row['cli_peak_rss_bytes'] / 2**30:.2f} GB" if "cli_peak_rss_bytes" in row else ""
        print(f"[{time.perf_counter() - wall:5.0f}s] {row['size']}: total {fmt_s(row['median_s']['total'])} s, "
              f"peak {row['peak_memory_bytes'] / 2**30:.2f} GB{cli}, load {row['load_average_after']}", flush=True)
    if not args.no_pgd:
        ours = next((r["median_s"]["total"] for r in results["sizes"] if (r["width"], r["height"]) == (args.pgd_size, args.pgd_size)), None)
        if ours is None:
            ours = measure_size(protector, args.pgd_size, args.pgd_size, args)["median_s"]["total"]
        results["pgd"] = pgd_baseline(models, args, ours)
        print(f"[{time.perf_counter() - wall:5.0f}s] PGD: {fmt_s(results['pgd']['per_step_s'])} s/step at {args.pgd_size}²", flush=True)
    results["load_average_end"] = load_average()
    results["wall_s"] = time.perf_counter() - wall
    results["verdicts"] = verdicts(results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    status = emit_report(results, markdown(results), args.out, args.markdown)
    print("\n" + "\n".join(goal_lines(results)))
    return status


def goal_lines(results: dict) -> list[str]:
    """Every goal this run measured, one line each, met or NOT MET with the number; then the machine and its load
    (the goals are for an idle 2-core CPU: a loaded machine's misses say little)."""
    lines = [f"Goals (issue 31) on {machine_line(results['machine'])}; load average at the end {results['load_average_end']}:"]
    for verdict in results["verdicts"]:
        lines.append(f"  {'met    ' if verdict['met'] else 'NOT MET'}  {verdict['target']}: measured {verdict['measured']}")
    if len(lines) == 1:
        lines.append("  none of the goals' sizes was measured (512, 1024, 2048, 4096x3072, 7296x5472)")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
