"""Throughput of the Ray Data job next to the plain CLI on this machine, and what Ray costs.

    python -m benchmarks.cluster_throughput            # 512² and 2048², 16 images each, TAEF2 + bundled checkpoint
    python -m benchmarks.cluster_throughput --quick    # smoke run: 2 images at 256²

For each size, the same N JPEGs (the first shared photo resized, like ``latency.py``) are protected
three ways, each end to end with its own imports and model load: the plain CLI as a command
(``python -m fastprotect``, torch's default threads), then the Ray job with 1 actor of all CPUs
(the CLI's resources and thread count) and with one actor per CPU. All CLI runs come first, so
an idle Ray instance does not slow them; one local Ray instance (``num_cpus`` = the machine's
cores) then serves all jobs, its start timed separately (a running cluster has it already). The
Ray overhead ratio is the 1-actor job's wall time over the CLI's, measured in the same run;
"fixed overhead" is the 1-actor wall time minus its actor's busy time (the sum of the report's
per-image seconds): actor start (imports), model load, scheduling. The CPU time per image is the
slope of the CLI's CPU time (all threads) between a 1-image and an N-image run, so imports and
model load drop out; it gives a paper estimate of CPU cost per million images. GPU time cannot
be measured here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    DEFAULT_CHECKPOINT,
    DEFAULT_IMAGES,
    DEFAULT_WEIGHTS,
    emit_report,
    fmt_s,
    load_average,
    machine_info,
    machine_line,
    parse_size,
    size_label,
    test_image_bytes,
)

# the project root: the CLI runs there, and Ray's workers import the project from it
ROOT = Path(__file__).resolve().parents[1]

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "cluster_throughput_cpu_taef2.json"
# A cloud vCPU-hour for a general-purpose VM (order of magnitude of on-demand x86 prices);
# only used for the clearly marked paper estimate, change it with --usd-per-vcpu-hour.
USD_PER_VCPU_HOUR = 0.04


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="512,2048", help="comma-separated sizes, e.g. 512,2048 or 4096x3072")
    parser.add_argument("--images", type=int, default=16, help="images per size and configuration (default 16)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="folder with the TAEF2 and LPIPS weights")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--photos", type=Path, default=DEFAULT_IMAGES, help="folder of photos (the first is resized)")
    parser.add_argument("--usd-per-vcpu-hour", type=float, default=USD_PER_VCPU_HOUR)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 images at 256²")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--markdown", type=Path, default=None)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.sizes, args.images = "256", 2
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    return args


def protection_argv(args: argparse.Namespace) -> list[str]:
    """The weights options both the CLI and the job get: real TAEF2 + LPIPS, the bundled checkpoint."""
    return ["--checkpoint", str(args.checkpoint), "--encoder-source", str(args.weights),
            "--lpips-backbone", str(args.weights / "alexnet_lpips_features.safetensors")]


def write_inputs(folder: Path, width: int, height: int, count: int, photos: Path) -> None:
    """``count`` copies of one test JPEG under distinct names (protection time does not depend on the name)."""
    folder.mkdir(parents=True)
    data = test_image_bytes(width, height, images=photos)
    for index in range(count):
        (folder / f"image_{index:03d}.jpg").write_bytes(data)


def run_cli(inputs: Path, outputs: Path, args: argparse.Namespace) -> dict:
    """``python -m fastprotect INPUTS -o OUTPUTS`` as a user runs it: wall and CPU seconds (all threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fastprotect", str(inputs), "-o", str(outputs), *protection_argv(args)],
                          cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"the CLI failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return {"status": done.returncode, "wall_s": elapsed, "cpu_s": cpu}


def measure_cli(folder: Path, width: int, height: int, args: argparse.Namespace) -> dict:
    """The CLI on 1 and on N images of one size; its N-image run and the CPU seconds per image (slope)."""
    single, inputs = folder / "in1", folder / "in"
    write_inputs(single, width, height, 1, args.photos)
    write_inputs(inputs, width, height, args.images, args.photos)
    one = run_cli(single, folder / "cli1", args)
    many = run_cli(inputs, folder / "cli", args)
    per_image = (many["cpu_s"] - one["cpu_s"]) / max(1, args.images - 1)
    return {**many, "images_per_s": args.images / many["wall_s"], "cpu_s_per_image": per_image, "one_image_wall_s": one["wall_s"]}


def run_ray(inputs: Path, outputs: Path, actors: int, cpus: float, args: argparse.Namespace) -> dict:
    from fastprotect import cluster

    wall = time.perf_counter()
    status = cluster.main([str(inputs), str(outputs), "--device", "cpu", "--actors", str(actors), "--cpus-per-actor", f"{cpus:g}",
                           *protection_argv(args)])
    elapsed = time.perf_counter() - wall
    report = json.loads((outputs / "report.json").read_text())
    busy = sum(row["seconds"] or 0.0 for row in report if row["status"] == "ok")
    return {"status": status, "wall_s": elapsed, "busy_s": busy, "actors": actors, "cpus_per_actor": cpus}


def start_ray() -> float:
    """A local Ray instance on all cores; its start time in seconds."""
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    return time.perf_counter() - start


def measure_ray(folder: Path, row: dict, args: argparse.Namespace) -> None:
    """The two Ray jobs on the inputs ``measure_cli`` wrote; adds their numbers to ``row``."""
    cores = os.cpu_count() or 1
    n = args.images
    one = run_ray(folder / "in", folder / "ray1", 1, float(cores), args)
    many = run_ray(folder / "in", folder / "ray2", cores, 1.0, args)
    row["ray_1_actor"] = {**one, "images_per_s": n / one["wall_s"], "busy_images_per_s": n / one["busy_s"]}
    row["ray_2_actors"] = {**many, "images_per_s": n / many["wall_s"], "busy_images_per_s": n * many["actors"] / many["busy_s"]}
    row["ray_overhead_ratio"] = one["wall_s"] / row["cli"]["wall_s"]
    row["ray_fixed_overhead_s"] = one["wall_s"] - one["busy_s"]
    row["ray_1_actor_bytes_equal_cli"] = all((folder / "cli" / p.name).read_bytes() == p.read_bytes()
                                             for p in (folder / "ray1").glob("*_protected.png"))
    row["load_average_after_ray"] = load_average()


def cost_estimate(rows: list[dict], usd_per_vcpu_hour: float) -> dict:
    """Paper estimate: CPU seconds per image × 10⁶ images, at a vCPU-hour price. Not a measurement."""
    return {row["size"]: {"vcpu_hours_per_million": row["cpu_s_per_image"] * 1e6 / 3600,
                          "usd_per_million": row["cpu_s_per_image"] * 1e6 / 3600 * usd_per_vcpu_hour} for row in rows}


def markdown(results: dict) -> str:
    lines = [f"Machine: {machine_line(results['machine'])}", f"Ray {results['ray_version']}, local instance started in "
             f"{results['ray_init_s']:.1f} s (not in the job times); {results['images']} images per size and configuration; "
             f"{results['mixture']}; load average at the end {results['load_average_end']}", "",
             "| size | CLI (img/s) | Ray, 1 actor × 2 CPU (img/s) | Ray, 2 actors × 1 CPU (img/s) | Ray overhead ratio (1 actor / CLI wall) | Ray fixed overhead (s) | 2 actors, busy-time img/s | CPU s / image |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["sizes"]:
        lines.append(f"| {row['size']} | {row['cli']['images_per_s']:.2f} | {row['ray_1_actor']['images_per_s']:.2f} | "
                     f"{row['ray_2_actors']['images_per_s']:.2f} | {row['ray_overhead_ratio']:.2f}× | {fmt_s(row['ray_fixed_overhead_s'])} | "
                     f"{row['ray_2_actors']['busy_images_per_s']:.2f} | {fmt_s(row['cpu_s_per_image'])} |")
    lines += ["", f"Paper estimate (not measured; CPU only, {results['usd_per_vcpu_hour']} USD per vCPU-hour; GPU time is not measurable here):", "",
              "| size | vCPU-hours per million images | USD per million images |", "|---|---|---|"]
    for size, estimate in results["cost_estimate"].items():
        lines.append(f"| {size} | {estimate['vcpu_hours_per_million']:.0f} | {estimate['usd_per_million']:.0f} |")
    same = all(row["ray_1_actor_bytes_equal_cli"] for row in results["sizes"])
    lines += ["", f"Ray 1-actor outputs byte-identical to the CLI's (same thread count): {same}"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    import ray

    wall = time.perf_counter()
    results: dict = {"machine": machine_info("cpu"), "command": " ".join(sys.argv), "images": args.images, "ray_version": ray.__version__,
                     "mixture": f"checkpoint {args.checkpoint}, TAEF2 + LPIPS AlexNet from {args.weights}",
                     "usd_per_vcpu_hour": args.usd_per_vcpu_hour, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="cluster-throughput-") as scratch:
        folders = {}
        for width, height in args.sizes:
            folders[(width, height)] = folder = Path(scratch) / size_label(width, height)
            cli_run = measure_cli(folder, width, height, args)
            results["sizes"].append({"size": size_label(width, height), "width": width, "height": height, "images": args.images,
                                     "cli": cli_run, "cpu_s_per_image": cli_run["cpu_s_per_image"], "load_average_after_cli": load_average()})
            print(f"[{time.perf_counter() - wall:5.0f}s] {size_label(width, height)}: CLI {cli_run['images_per_s']:.2f} img/s", flush=True)
        results["ray_init_s"] = start_ray()
        for row, folder in zip(results["sizes"], folders.values()):
            measure_ray(folder, row, args)
            print(f"[{time.perf_counter() - wall:5.0f}s] {row['size']}: Ray 1 actor {row['ray_1_actor']['images_per_s']:.2f} img/s, "
                  f"{row['ray_2_actors']['actors']} actors {row['ray_2_actors']['images_per_s']:.2f}", flush=True)
        ray.shutdown()
    results["cost_estimate"] = cost_estimate(results["sizes"], args.usd_per_vcpu_hour)
    results["load_average_end"] = load_average()
    results["wall_s"] = time.perf_counter() - wall
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.weights / "taef2_encoder.pth").is_file():
        print(f"error: no TAEF2 weights in {args.weights} (--weights)", file=sys.stderr)
        return 2
    results = run(args)
    return emit_report(results, markdown(results), args.out, args.markdown)


if __name__ == "__main__":
    raise SystemExit(main())
