"""A/B in one process: this checkout's protection against an older copy of the library, end to end and by stage.

    git archive 0a17567 fastprotect | tar -x -C /tmp/old          # the library before issue 31's changes
    python -m benchmarks.latency_ab --old /tmp/old [--method generator|mixture] [--sizes 512,4096x3072] [--threads 1]

On a shared, loaded machine absolute times drift from minute to minute; running the two versions turn about (A B A B …)
in one process on the same decoded bytes makes their ratio trustworthy where the times are not. Each run is decode
(``load_image``) + ``Protector.protect`` (no UI metrics) + ``png_bytes``, as each version's command line runs it; the peak resident memory of each version is
read per size (Linux VmHWM, reset before each of its runs), so it includes what both versions have loaded (a few MB of
models: the generator and a dummy encoder, or the mixture). The older copy is imported under the name
``fastprotect_old`` (its absolute imports rewritten in a temporary copy). Output: a table of medians and the ratios.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import fastprotect  # noqa: F401, I001  (before torch: OMP_WAIT_POLICY)
import torch

from benchmarks.common import PeakMemory, load_average, parse_size, size_label, test_image_bytes
from fastprotect.bundle import bundled_checkpoint_for


def import_old(folder: Path):
    """The ``fastprotect`` package found in ``folder``, imported as ``fastprotect_old``."""
    source = folder / "fastprotect"
    if not (source / "protect.py").is_file():
        raise SystemExit(f"error: {folder} holds no fastprotect package (make one with git archive, see --help)")
    copy = Path(tempfile.mkdtemp(prefix="fastprotect_old_")) / "fastprotect_old"
    shutil.copytree(source, copy)
    for path in copy.rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\b(from|import) fastprotect\b", r"\1 fastprotect_old", text))
    sys.path.insert(0, str(copy.parent))
    return importlib.import_module("fastprotect_old")


def build(package: str, method: str):
    """(Protector, load_image, png_bytes) of ``package`` for the bundled ``method`` checkpoint, with a dummy encoder
    (neither method's protection runs an encoder except the mixture's routing, which the dummy stands in for alike)."""
    protect = importlib.import_module(f"{package}.protect")
    images = importlib.import_module(f"{package}.images")
    dummy = importlib.import_module(f"{package}.dummy")
    folder = bundled_checkpoint_for(method)
    if method == "generator":
        model = importlib.import_module(f"{package}.generator").PerturbationGenerator.from_pretrained(folder)
        protector = protect.Protector(dummy.dummy_autoencoder(), generator=model)
    else:
        model = importlib.import_module(f"{package}.mixture").MixtureOfPerturbations.from_pretrained(folder)
        protector = protect.Protector(dummy.dummy_autoencoder(model.config.encoder_kind), mixture=model)
    return protector, images.load_image, images.png_bytes


def run_once(version, data: bytes) -> dict[str, float]:
    """One image as the command line of that version protects it: 8-bit levels and no budget map where the version
    has them (``load_image(levels=True)``, ``keep_budget_map=False``), its float path otherwise."""
    protector, load_image, png_bytes = version
    cli_path = "levels" in inspect.signature(load_image).parameters
    cpu = time.process_time()
    start = time.perf_counter()
    loaded = load_image(data, levels=True) if cli_path else load_image(data)
    decoded = time.perf_counter()
    extra = {"keep_budget_map": False} if cli_path else {}
    result = protector.protect(loaded, compute_metrics=False, adaptive_strength=False, **extra)
    protected = time.perf_counter()
    png_bytes(loaded, result.image)
    end = time.perf_counter()
    return {"decode": decoded - start, "protect": protected - decoded, "encode": end - protected, "total": end - start,
            "cpu": time.process_time() - cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_ab", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="folder holding the older fastprotect/ (git archive)")
    parser.add_argument("--method", choices=("generator", "mixture"), default="generator")
    parser.add_argument("--sizes", default="512,1024,2048,4096x3072")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each version per size (turn about)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import_old(args.old)
    versions = {"old": build("fastprotect_old", args.method), "new": build("fastprotect", args.method)}
    memory = PeakMemory("cpu")
    print(f"method {args.method}, torch threads {torch.get_num_threads()}, {args.runs} runs each, turn about; "
          f"load average before {load_average()}")
    print("| size | version | decode s | protect s | encode s | total s | CPU s | peak RSS | old/new: total, CPU s (median of pairs) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        width, height = parse_size(size)
        data = test_image_bytes(width, height)
        for version in versions.values():  # warm-up
            run_once(version, data)
        times: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        peaks: dict[str, int] = {"old": 0, "new": 0}
        for _ in range(args.runs):
            for name, version in versions.items():
                memory.reset()
                times[name].append(run_once(version, data))
                peaks[name] = max(peaks[name], memory.read())
        ratio = {key: statistics.median(a[key] / b[key] for a, b in zip(times["old"], times["new"], strict=True)) for key in ("total", "cpu")}
        for name in ("old", "new"):
            med = {key: statistics.median(r[key] for r in times[name]) for key in ("decode", "protect", "encode", "total", "cpu")}
            ratios = f"{ratio['total']:.2f}×, {ratio['cpu']:.2f}×" if name == "new" else ""
            print(f"| {size_label(width, height)} | {name} | {med['decode']:.3f} | {med['protect']:.3f} | {med['encode']:.3f} | "
                  f"{med['total']:.3f} | {med['cpu']:.3f} | {peaks[name] / 2**30:.2f} GB | {ratios} |", flush=True)
    print(f"load average after {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
