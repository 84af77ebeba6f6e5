"""Load test: N concurrent ``/protect`` requests (gradio_client, one thread and one client each).

Every request must succeed and carry its verdict (the queue may hold some back: that is queueing, not
failure); a request's latency ends with its last streamed output, the verdict. Prints per-request latency
percentiles and the wall time. Against a running Space::

    python -m benchmarks.load_test --url http://127.0.0.1:7860/ [--requests 10] [--size 512]

Without ``--url`` it starts the Space on dummy random models (``fastprotect.dummy``) in this
process first, with the bundled checkpoint's real LPIPS backbone when present.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def make_image(path: Path, size: int) -> Path:
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(12 * x * y)], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path


def start_dummy_app() -> str:
    """The Space (``app.build_demo``, queued like ``app.main``) on a dummy Protector; its URL."""
    import app
    from webapp import space
    from webapp.limits import SpaceLimits
    from fastprotect.bundle import bundled_checkpoint
    from fastprotect.dummy import dummy_space_protector
    from fastprotect.sources import LPIPS_BUNDLE_FILE

    lpips = bundled_checkpoint() / LPIPS_BUNDLE_FILE
    workspace = space.Workspace()
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workspace.root / "cached_examples")
    loaded = space.LoadOutcome(dummy_space_protector(lpips_backbone=lpips if lpips.is_file() else None))
    limits = SpaceLimits.from_environment()
    demo = app.build_demo(loaded, workspace=workspace, limits=limits)
    app.launch(demo, limits, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    return demo.local_url


def one_request(url: str, image: Path, index: int) -> tuple[float, str | None]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    start = time.perf_counter()
    try:
        outputs = client.predict(handle_file(str(image)), 8, "auto", True, 0, api_name="/protect")  # the final yield
        elapsed = time.perf_counter() - start
        png, info = outputs[1], outputs[6]  # (verdict, png, before/after, details, perturbation, map, info)
        with Image.open(png) as result, Image.open(image) as source:
            if result.format != "PNG" or result.size != source.size:
                return elapsed, f"request {index}: wrong output {result.format} {result.size}"
        if not (info or {}).get("verdict"):  # every request is timed with its verdict measured, as a visitor waits for it
            return elapsed, f"request {index}: no verdict in the result"
        return elapsed, None
    except Exception as error:  # counted and printed: the benchmark's point is that there are none
        return time.perf_counter() - start, f"request {index}: {type(error).__name__}: {error}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running Space; default: start the Space on dummy models here")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--size", type=int, default=512, help="side of the square test image")
    args = parser.parse_args()
    url = args.url or start_dummy_app()
    with tempfile.TemporaryDirectory() as folder:
        image = make_image(Path(folder) / "load.png", args.size)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.requests) as pool:
            results = list(pool.map(lambda i: one_request(url, image, i), range(args.requests)))
        wall = time.perf_counter() - start
    latencies = [seconds for seconds, _ in results]
    errors = [error for _, error in results if error]
    print(f"{args.requests} concurrent /protect requests, {args.size}×{args.size} PNG, against {url}")
    print(f"succeeded: {args.requests - len(errors)}/{args.requests}   wall: {wall:.2f} s")
    print(
        "latency s: "
        + "  ".join(f"p{q}={percentile(latencies, q):.2f}" for q in (50, 90, 99))
        + f"  mean={statistics.mean(latencies):.2f}  max={max(latencies):.2f}"
    )
    for error in errors:
        print("ERROR", error)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
