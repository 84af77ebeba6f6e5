"""The Space's memory under its concurrency limit: ``python app.py`` serving concurrent large uploads.

Starts the real Space (bundled checkpoint, offline, CPU) in a subprocess, waits until its models are in (one small
request), reads the server's resident memory, then sends ``--requests`` concurrent ``/protect`` requests of a
``--size`` photo (a dev-set photo resized, JPEG quality 95) with gradio_client, each to its verdict. The Space runs
``SpaceLimits.concurrency`` (2) of them at once and queues the rest. Reports the server process's resident memory
before, its peak (``VmHWM`` from /proc, read by the process itself: no other process counted) and after, and
the peak's growth per concurrent request.

::

    python -m benchmarks.space_memory [--size 5600x4200] [--requests 4] [--json benchmarks/results/space_memory.json]

Issue 31 asks for "the Space's RSS bounded likewise under its concurrency limit", the command line's bounds being
1 GB at 4096×3072 and 1.5 GB at 40 MP. The number is this benchmark's own reading of it: the peak grows by at most
:data:`PER_REQUEST_GOAL_BYTES` (the command line's 40 MP bound) per concurrent request for a 23.5 MP upload (the
Space's largest, ``SpaceLimits.max_pixels`` 24 MP). GB = 2³⁰ bytes. The requests come through the API, which has
no upload event: the page's second decode of an upload for the verdict's clean half (webapp/references.py, one at a
time on its own thread) is not in this peak.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

GB = 2**30  # as benchmarks.latency: its memory goals and columns are in these units
PER_REQUEST_GOAL_BYTES = 1.5 * GB


def read_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes (Linux /proc)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def goal_line(results: dict[str, Any]) -> str:
    growth = results["peak_growth_per_request"]
    state = "met    " if growth is not None and growth <= PER_REQUEST_GOAL_BYTES else "NOT MET"
    return (f"  {state}  peak growth per concurrent {results['size']} request ≤ {PER_REQUEST_GOAL_BYTES / GB:.1f} GB: "
            f"measured {'–' if growth is None else f'{growth / GB:.2f} GB'}")


def report(results: dict[str, Any]) -> str:
    gb = lambda value: f"{value / GB:.2f} GB"  # noqa: E731
    return "\n".join([
        f"The Space (`python app.py`, bundled checkpoint, CPU) under {results['requests']} concurrent /protect requests of a "
        f"{results['size']} JPEG ({results['upload_mb']:.1f} MB), concurrency limit {results['concurrency']}; {results['machine']}; "
        f"load average before {results['load_before']}.",
        "",
        "| server process | resident memory |",
        "|---|---|",
        f"| models loaded, idle (after one 512² request) | {gb(results['idle_rss'])} |",
        f"| peak while serving (VmHWM) | {gb(results['peak'])} |",
        f"| after the requests | {gb(results['after_rss'])} |",
        "",
        f"Requests: {results['ok']} of {results['requests']} ok, wall {results['wall_s']:.1f} s; peak growth over idle "
        f"{gb(results['peak'] - results['idle_rss'])}, per concurrent request {gb(results['peak_growth_per_request'])}.",
        "",
        "Goal (issue 31):",
        goal_line(results),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from benchmarks.common import load_average, machine_info, machine_line, parse_size, size_label, test_image_bytes, write_json

    parser.add_argument("--size", type=parse_size, default=(5600, 4200), help="WIDTHxHEIGHT of the upload (default 5600x4200)")
    parser.add_argument("--requests", type=int, default=4, help="concurrent requests (default 4: two run, two queue)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from benchmarks.load_test import one_request
    from benchmarks.space_latency import photo_jpeg, default_photo, real_space
    from webapp.limits import SpaceLimits

    width, height = args.size
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="space-memory-") as folder:
        scratch = Path(folder)
        small, large = scratch / "small.jpg", scratch / "large.jpg"
        small.write_bytes(photo_jpeg(512, default_photo()))
        large.write_bytes(test_image_bytes(width, height))
        upload_mb = large.stat().st_size / 1e6
        with real_space(scratch / "app.log") as (url, _, process):
            elapsed, error = one_request(url, small, 0)  # the models load in the background: in after this
            if error:
                raise SystemExit(f"the warm-up request failed: {error}")
            idle = read_status(process.pid)["VmRSS"]
            start = time.perf_counter()
            with ThreadPoolExecutor(args.requests) as pool:
                outcomes = list(pool.map(lambda index: one_request(url, large, index), range(args.requests)))
            wall = time.perf_counter() - start
            status = read_status(process.pid)
    errors = [error for _, error in outcomes if error]
    for error in errors:
        print(error)
    concurrency = SpaceLimits.from_environment().concurrency
    results = {
        "machine": machine_line(machine_info("cpu")), "size": size_label(width, height), "upload_mb": upload_mb,
        "requests": args.requests, "concurrency": concurrency, "load_before": load_before, "ok": args.requests - len(errors),
        "wall_s": wall, "idle_rss": idle, "peak": status["VmHWM"], "after_rss": status["VmRSS"],
        "peak_growth_per_request": (status["VmHWM"] - idle) / min(concurrency, args.requests),
    }
    print(report(results))
    if args.json:
        write_json(args.json, results)
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
