"""What this machine cannot go below: the numbers behind the goals that docs/BENCHMARKS.md and docs/SPACE.md call
unreachable on 2 CPU cores.

    python -m benchmarks.floors [--json benchmarks/results/floors.json --markdown benchmarks/results/floors.md]

* **The generator's network**: multiply-adds of each convolution (counted by forward hooks) at the network's size for
  512², 1024² and larger uploads, the machine's float32 matrix-product rate (2048² ``torch.matmul``, best of 5), the
  time the network would take at that rate (a floor: no convolution beats the machine's best matrix product) and
  what it measures (best of 5).
* **The verdict's round trips**: TAEF2 at 256² (the verdict's copy): encoder, decoder, one copy, three copies one by
  one and as one batch of three; LPIPS once; ``quick_verdict`` whole and with a clean reference (best of 3).
* **Start-up**: fresh processes (median of 3): ``import gradio``, ``import torch``, and a minimal Gradio page (one
  Markdown, one Image, one Button) from the process's start to its first HTTP 200.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fastprotect  # noqa: F401, I001  (before torch: OMP_WAIT_POLICY)
import torch

ROOT = Path(__file__).resolve().parents[1]

MINIMAL_PAGE = """
import time, socket, urllib.request
start = float(__import__("sys").argv[1])
import gradio as gr
with gr.Blocks() as demo:
    gr.Markdown("hi"); gr.Image(); gr.Button("x")
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]
demo.launch(prevent_thread_lock=True, server_port=port, quiet=True)
urllib.request.urlopen(f"http://127.0.0.1:{port}/").read()
print("SECONDS", time.time() - start, flush=True)
demo.close()
"""


def best(function: Callable[[], object], runs: int) -> float:
    function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def network_floor(runs: int) -> dict:
    from fastprotect.bundle import bundled_checkpoint_for
    from fastprotect.generator import PerturbationGenerator

    generator = PerturbationGenerator.from_pretrained(bundled_checkpoint_for("generator"))
    macs: list[int] = []

    def count(module, inputs, output) -> None:
        macs.append(output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1] // module.groups)

    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    gflops = 2 * 2048**3 / best(lambda: a @ b, 5) / 1e9
    convolutions = [m for m in generator.net.modules() if isinstance(m, torch.nn.Conv2d)]
    rows = []
    with torch.no_grad():
        for side in (512, 1024):
            image = torch.rand(1, 3, side, side)
            macs.clear()
            hooks = [m.register_forward_hook(count) for m in convolutions]
            generator.small_pattern(image)
            for hook in hooks:
                hook.remove()
            counted = sum(macs)
            rows.append({"upload": f"{side}²", "network_size": list(generator.network_size(side, side)), "gmac": counted / 1e9,
                         "floor_s": 2 * counted / (gflops * 1e9), "measured_s": best(lambda: generator.small_pattern(image), runs)})
    return {"matmul_gflops": gflops, "rows": rows}


def verdict_costs(runs: int) -> dict:
    from fastprotect.protect import Protector
    from fastprotect.verdict import clean_reference, quick_verdict

    protector = Protector.from_pretrained()
    autoencoder = protector.autoencoder
    x = torch.rand(1, 3, 256, 256)
    three = torch.rand(3, 3, 256, 256)
    clean = (torch.rand(1, 3, 1024, 1024) * 255).round() / 255
    protected = (clean + (torch.rand_like(clean) - 0.5) * 16 / 255).clamp(0, 1).mul(255).round() / 255
    reference = clean_reference(protector, clean)
    with torch.no_grad():
        latent = autoencoder.encoder.encode(x)
        return {
            "encoder_s": best(lambda: autoencoder.encoder.encode(x), runs),
            "decoder_s": best(lambda: autoencoder.decoder(latent), runs),
            "round_trip_s": best(lambda: autoencoder.round_trip(x), runs),
            "three_one_by_one_s": best(lambda: [autoencoder.round_trip(three[i : i + 1]) for i in range(3)], runs),
            "three_as_a_batch_s": best(lambda: autoencoder.round_trip(three), runs),
            "lpips_s": best(lambda: protector.perceptual(x, x), runs),
            "verdict_whole_s": best(lambda: quick_verdict(protector, clean, protected), runs),
            "verdict_with_reference_s": best(lambda: quick_verdict(protector, clean, protected, reference=reference), runs),
        }


def fresh(code: str, *args: str) -> float:
    """The seconds a fresh ``python -c code`` prints on its ``SECONDS`` line."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", code, str(time.time()), *args], cwd=ROOT, capture_output=True, text=True,
                         check=True, env=env)
    return next(float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("SECONDS"))


def startup(runs: int) -> dict:
    timed_import = "import sys, time; start = time.perf_counter(); import {0}; print('SECONDS', time.perf_counter() - start)"
    return {
        "import_gradio_s": statistics.median(fresh(timed_import.format("gradio")) for _ in range(runs)),
        "import_torch_s": statistics.median(fresh(timed_import.format("torch")) for _ in range(runs)),
        "minimal_page_s": statistics.median(fresh(MINIMAL_PAGE) for _ in range(runs)),
    }


def markdown(results: dict) -> str:
    net, verdict, start = results["network"], results["verdict"], results["startup"]
    lines = [f"{results['machine']}; load average before {results['load_before']}, after {results['load_after']}.", "",
             f"The generator's network; this machine's float32 matrix product: {net['matmul_gflops']:.0f} GFLOP/s.", "",
             "| upload | network runs at | multiply-adds | floor at that rate | measured |", "|---|---|---|---|---|"]
    for row in net["rows"]:
        lines.append(f"| {row['upload']} | {row['network_size'][0]}×{row['network_size'][1]} | {row['gmac']:.2f} G | "
                     f"{row['floor_s']:.3f} s | {row['measured_s']:.3f} s |")
    lines += ["", "The verdict at 256² (TAEF2, LPIPS-alex), best of runs:", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {name.removesuffix('_s').replace('_', ' ')} | {value:.3f} |" for name, value in verdict.items()]
    lines += ["", "Start-up, fresh processes, median:", "", "| what | seconds |", "|---|---|",
              f"| import gradio | {start['import_gradio_s']:.2f} |", f"| import torch | {start['import_torch_s']:.2f} |",
              f"| a minimal Gradio page answering HTTP 200, from its process's start | {start['minimal_page_s']:.2f} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs (best of) for the network; 3 for the rest")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    from benchmarks.common import load_average, machine_info, machine_line, write_json

    results = {"machine": machine_line(machine_info("cpu")), "load_before": load_average()}
    results["network"] = network_floor(args.runs)
    results["verdict"] = verdict_costs(3)
    results["startup"] = startup(3)
    results["load_after"] = load_average()
    report = markdown(results)
    print(report)
    if args.json:
        write_json(args.json, results)
    if args.markdown:
        args.markdown.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
