"""Cold import time: the median of N fresh interpreters importing each module.

    python -m benchmarks.import_time [--runs 5] [--modules torch fastprotect.protect app]

Run from the repository root (``app`` is the Space's module there). ``heavy`` lists the optional
libraries the import pulled in (tests/test_imports.py keeps the library's list empty).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HEAVY = ("torchvision", "transformers", "diffusers", "lpips", "gradio", "sklearn", "torchmetrics")
PROBE = (
    "import json, sys, time\nstart = time.perf_counter()\nimport {module}\nseconds = time.perf_counter() - start\n"
    "print(json.dumps({{'seconds': seconds, 'heavy': [m for m in {heavy!r} if m in sys.modules]}}))"
)


def cold_import(module: str) -> dict:
    code = PROBE.format(module=module, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modules", nargs="+", default=["torch", "fastprotect.protect", "fastprotect.cli", "app"])
    args = parser.parse_args(argv)
    print(f"{args.runs} cold imports each, load average {[round(x, 2) for x in os.getloadavg()]}")
    print("| module | median s | min s | heavy libraries imported |")
    print("| --- | --- | --- | --- |")
    for module in args.modules:
        runs = [cold_import(module) for _ in range(args.runs)]
        seconds = [run["seconds"] for run in runs]
        print(f"| {module} | {statistics.median(seconds):.2f} | {min(seconds):.2f} | {', '.join(runs[0]['heavy']) or '–'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
