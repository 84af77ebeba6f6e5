"""Load test: N concurrent ``/protect`` requests (gradio_client, one thread and one client each).

Every request must succeed (the queue may hold some back: that is queueing, not failure). Prints
per-request latency percentiles and the wall time. Against a running Space::

    python benchmarks/load_test.py --url http://127.0.0.1:7860/ [--requests 10] [--size 512]

Without ``--url`` it starts the tiny-model app (tests/launch_tiny_app.py) in this process first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def make_image(path: Path, size: int) -> Path:
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(12 * x * y)], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path


def start_tiny_app() -> str:
    sys.path.insert(0, str(ROOT))
    import app
    from fastprotect.space import Workspace
    from tests.launch_tiny_app import build_tiny_demo, shared_lpips_backbone

    demo = build_tiny_demo(lpips_backbone=shared_lpips_backbone(), workspace=Workspace())
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, max_file_size=app.MAX_FILE_SIZE, allowed_paths=[], ssr_mode=False)
    return demo.local_url


def one_request(url: str, image: Path, index: int) -> tuple[float, str | None]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    start = time.perf_counter()
    try:
        png = client.predict(handle_file(str(image)), 8, "auto", True, 0, api_name="/protect")[0]
        with Image.open(png) as result:
            if result.format != "PNG" or result.size != Image.open(image).size:
                return time.perf_counter() - start, f"request {index}: wrong output {result.format} {result.size}"
        return time.perf_counter() - start, None
    except Exception as error:  # counted and printed: the benchmark's point is that there are none
        return time.perf_counter() - start, f"request {index}: {type(error).__name__}: {error}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running Space; default: start the tiny app here")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--size", type=int, default=512, help="side of the square test image")
    args = parser.parse_args()
    url = args.url or start_tiny_app()
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
