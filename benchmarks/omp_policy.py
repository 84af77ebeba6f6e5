"""OpenMP wait policy × torch threads, end to end at 512² (TAEF2), each policy in a fresh process.

    python -m benchmarks.omp_policy [--runs 4]

OMP_WAIT_POLICY is read when torch loads its OpenMP runtime, so every policy needs its own process.
"default" imports torch before fastprotect (whose import otherwise sets PASSIVE). Runs with 1 and 2
threads are interleaved, so both see the same background load. Prints one JSON line per policy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run with the repository root as the working directory, so `benchmarks` imports without a path edit.
CHILD = """
import json
import torch  # first: the policy in force is the one in the environment at this point
from benchmarks.common import build_models, make_protector, test_image_bytes, median, load_average
from benchmarks.latency import run_once
models = build_models("taef2", {checkpoint!r})
protector, data = make_protector(models, "cpu"), test_image_bytes(512, 512)
times = {{1: [], 2: []}}
for _ in range({runs} + 1):
    for n in (1, 2):
        torch.set_num_threads(n)
        times[n].append(run_once(protector, data, "cpu")["total"])
print(json.dumps({{"policy": {policy!r}, "seconds": {{n: median(t[1:]) for n, t in times.items()}}, "load_average": load_average()}}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "taef2-mixture"))
    args = p.parse_args(argv)
    for policy in ("default", "PASSIVE", "default", "PASSIVE"):
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        code = CHILD.format(checkpoint=args.checkpoint, runs=args.runs, policy=policy)
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
        print(out.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
