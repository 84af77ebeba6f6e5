"""PNG writers on protected photos: seconds against file size, at the latency benchmark's four sizes.

    python -m benchmarks.png_writers [--sizes 512,1024,2048,4096x3072] [--runs 3]

Each image is the latency benchmark's test photo protected by the default generator (its noise is what makes PNGs
large), then written by: Pillow at compress_level 0, 1 (the writer before issue 31) and 6 (Pillow's default); and by
our writer (``fastprotect.images.png_bytes``: the "Up" filter by numpy, DEFLATE level 1) with each DEFLATE back-end
that is installed: ISA-L (``isal``, the one shipped), zlib (the fallback), and zlib-ng (``zlib_ng``) when present.
Our writer's rows also include the metadata handling; all
candidates write the same pixels, and every file is decoded and checked. Best of ``--runs``.
"""

from __future__ import annotations

import argparse
import importlib
import io
import time
import zlib

import fastprotect  # noqa: F401, I001  (before torch: OMP_WAIT_POLICY)
import numpy as np
import torch
from PIL import Image

from benchmarks.common import parse_size, size_label, test_image_bytes
from fastprotect import images
from fastprotect.bundle import bundled_checkpoint_for
from fastprotect.dummy import dummy_autoencoder
from fastprotect.generator import PerturbationGenerator
from fastprotect.protect import Protector


def _pillow(level: int):
    def write(loaded, pixels) -> bytes:
        image = images.to_pil(loaded, pixels)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=level, pnginfo=images.png_info(loaded), **image.info)
        return buffer.getvalue()
    return write


def _ours(backend):
    def write(loaded, pixels) -> bytes:
        saved = images._deflate
        images._deflate = backend
        try:
            return images.png_bytes(loaded, pixels)
        finally:
            images._deflate = saved
    return write


def writers() -> dict[str, object]:
    found = {"Pillow, level 0": _pillow(0), "Pillow, level 1 (before)": _pillow(1), "Pillow, level 6": _pillow(6)}
    for label, module in (("ours, ISA-L level 1 (shipped)", "isal.isal_zlib"), ("ours, zlib-ng level 1", "zlib_ng.zlib_ng")):
        try:
            found[label] = _ours(importlib.import_module(module))
        except ImportError:
            pass
    found["ours, zlib level 1 (fallback)"] = _ours(zlib)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.png_writers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="512,1024,2048,4096x3072")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-level-6", action="store_true", help="leave out Pillow's slowest level")
    args = parser.parse_args(argv)
    protector = Protector(dummy_autoencoder(), generator=PerturbationGenerator.from_pretrained(bundled_checkpoint_for("generator")))
    candidates = writers()
    if args.skip_level_6:
        candidates.pop("Pillow, level 6")
    print(f"torch threads {torch.get_num_threads()}; best of {args.runs}; seconds / MB")
    print("| writer | " + " | ".join(size_label(*parse_size(s)) for s in args.sizes.split(",")) + " |")
    print("|---" * (len(args.sizes.split(",")) + 1) + "|")
    rows = {name: [] for name in candidates}
    for size in args.sizes.split(","):
        loaded = images.load_image(test_image_bytes(*parse_size(size)))
        pixels = protector.protect(loaded, compute_metrics=False).image
        expected = images.pixels_to_uint8(pixels)
        for name, write in candidates.items():
            best, data = float("inf"), b""
            for _ in range(args.runs):
                start = time.perf_counter()
                data = write(loaded, pixels)
                best = min(best, time.perf_counter() - start)
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), expected), name
            rows[name].append(f"{best:.3f} s / {len(data) / 2**20:.2f} MB")
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
