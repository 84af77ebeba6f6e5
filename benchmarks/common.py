"""Shared pieces of the benchmarks: machine description, models, test images, timing, memory.

Nothing here is timed by itself; ``latency.py`` and ``ablate_speed.py`` build on it. Models:

* ``taef2``: the real TAEF2 tiny autoencoder from a local folder (``--weights``);
* ``sd-vae-random``: an ``AutoencoderKL`` with the SD-1.5 VAE's architecture and random weights
  (``fastprotect.dummy.dummy_sd_vae(sd15_sized=True)``): the speed of the real SD VAE without its
  download (latency does not depend on the weight values);
* ``dummy``: ``fastprotect.dummy``'s small random SD-VAE and random-trunk LPIPS, for the smoke test only.

The mixture is the checkpoint given with ``--checkpoint`` when it loads, else a random mixture of
the trained one's shape (size 256, assign size 128): latency does not depend on its values either,
but efficacy does, so efficacy numbers say which mixture they used.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fastprotect import environment
from fastprotect.dummy import dummy_autoencoder, dummy_mixture, dummy_perceptual
from fastprotect.encoders import Autoencoder, load_autoencoder
from fastprotect.generator import PerturbationGenerator
from fastprotect.images import resize_tensor
from fastprotect.mixture import MixtureOfPerturbations
from fastprotect.protect import Protector
from fastprotect.sources import checkpoint_method
from fastprotect.timing import StageTimer
from fastprotect.vocabulary import is_image_name

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(environment.get("FASTPROTECT_SHARED") or ROOT.parent / "shared")
DEFAULT_WEIGHTS = SHARED / "weights"
DEFAULT_IMAGES = SHARED / "data" / "images"
DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "taef2-mixture"
ENCODERS = ("taef2", "sd-vae-random", "dummy")
# PhotoGuard's encoder attack as its official demo runs it (MadryLab/photoguard demo/app.py,
# immunize_fn: pgd(..., eps=0.12, step_size=0.01, iters=200) on [-1, 1] images, i.e. 200 signed
# gradient steps; its pgd() helper's own default is 40).
PHOTOGUARD_STEPS = 200
# Table 2 of the FastProtect paper (512² image): seconds on an A100 GPU / on CPU.
PAPER_TABLE2 = {
    "FastProtect": (0.04, 2.9),
    "PhotoGuard": (7.0, 370.0),
    "Mist": (40.0, 1440.0),
    "Anti-DreamBooth": (225.0, 7278.0),
}


# ------------------------------------------------------------------------------- the machine
def machine_info(device: str) -> dict:
    """CPU model, cores, memory, torch version/threads, accelerator, current load average."""
    import psutil

    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "load_average": load_average(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_line(info: dict) -> str:
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return (f"{info['cpu_model']}, {info['logical_cores']} logical cores, {info['memory_gb']} GB RAM, torch {info['torch']} "
            f"({info['torch_threads']} threads, OMP_WAIT_POLICY={info.get('omp_wait_policy')}), device {info['device']}{gpu}, load average {info['load_average']}")


# ---------------------------------------------------------------------------------- models
def build_autoencoder(kind: str, weights: Path, device: str) -> Autoencoder:
    if kind == "taef2":
        return load_autoencoder("taef2", weights, with_decoder=True, device=device)
    if kind in ("sd-vae-random", "dummy"):
        auto = dummy_autoencoder("sd-vae", sd15_sized=kind == "sd-vae-random")
        auto.encoder.to(device)
        auto.decoder.to(device)
        return auto
    raise ValueError(f"unknown encoder {kind!r}; expected one of {ENCODERS}")


def build_perceptual(kind: str, weights: Path, device: str):
    """Real LPIPS AlexNet from ``weights`` (a random trunk for ``dummy``: the heads ship with lpips)."""
    from fastprotect.perceptual import load_perceptual

    if kind == "dummy":
        return dummy_perceptual().to(device)
    return load_perceptual("alex", weights / "alexnet_lpips_features.safetensors", device=device)


@dataclass
class Models:
    autoencoder: Autoencoder
    perceptual: object
    mixture: MixtureOfPerturbations
    mixture_source: str  # "checkpoint <path>", "generator <path>" or "random (...)"
    trained: bool
    generator: PerturbationGenerator | None = None  # when the checkpoint is a generator: it protects, the mixture only lends its targets


def build_models(encoder: str, checkpoint: str | Path | None, *, weights: Path = DEFAULT_WEIGHTS, device: str = "cpu",
                 half: bool = False) -> Models:
    """Encoder (+ decoder), LPIPS and the mixture. ``half``: fp16 encoder and LPIPS (GPU only)."""
    autoencoder = build_autoencoder(encoder, Path(weights), device)
    perceptual = build_perceptual(encoder, Path(weights), device)
    mixture, source, trained, generator = None, "", False, None
    if checkpoint is not None and (Path(checkpoint) / "config.json").exists() and checkpoint_method(str(checkpoint)) == "generator":
        generator = PerturbationGenerator.from_pretrained(checkpoint).to(device)
        generator_source, checkpoint = f"generator {checkpoint}", DEFAULT_CHECKPOINT
    if checkpoint is not None and Path(checkpoint).is_dir() and (Path(checkpoint) / "config.json").exists():
        mixture = MixtureOfPerturbations.from_pretrained(checkpoint)
        if mixture.config.latent_channels != autoencoder.encoder.latent_channels:
            print(f"note: checkpoint {checkpoint} was trained for {mixture.config.encoder_kind}; using a random mixture for {encoder}")
            mixture = None
        else:
            source, trained = f"checkpoint {checkpoint}", True
    if mixture is None:
        kind = "taef2" if encoder == "taef2" else "sd-vae"
        size, assign = (32, 32) if encoder == "dummy" else (256, 128)
        mixture = dummy_mixture(latent_channels=autoencoder.encoder.latent_channels, encoder_kind=kind, size=size, assign_size=assign)
        source = f"random (size {size}, assign size {assign}; same shape as the trained mixture)"
    if half:
        autoencoder.encoder.half()
        perceptual.half()
    if generator is not None:
        source, trained = generator_source, True
    return Models(autoencoder, perceptual, mixture.to(device), source, trained, generator)


def make_protector(models: Models, device: str, **options) -> Protector:
    """A Protector on ``models`` whose stage timer synchronises the device (on a GPU each stage then
    gets its own kernels, not whatever was queued before it; no cost on CPU)."""
    mixture = None if models.generator is not None else models.mixture
    return Protector(models.autoencoder, mixture=mixture, generator=models.generator, perceptual=models.perceptual, device=device,
                     timer=StageTimer.for_device(device), **options)


def generator_protector(parser: argparse.ArgumentParser, folder: Path) -> Protector:
    """The Protector of a generator checkpoint ``folder``; a one-line usage error (exit 2) when it holds a mixture."""
    protector = Protector.from_pretrained(folder)
    if protector.generator is None:
        parser.error(f"{folder} is not a generator checkpoint")
    return protector


# ---------------------------------------------------------------------------------- images
def real_image_paths(images: Path = DEFAULT_IMAGES) -> list[Path]:
    if not images.is_dir():
        return []
    return sorted(p for p in images.rglob("*") if p.is_file() and is_image_name(p.name))


def test_image_bytes(width: int, height: int, *, images: Path = DEFAULT_IMAGES, quality: int = 95, seed: int = 0) -> bytes:
    """A photo (the first shared image, resized bicubic to width×height) as JPEG bytes, like an upload.

    Without the shared images: smooth random colour fields (so JPEG and PNG behave like on a photo).
    """
    from PIL import Image

    paths = real_image_paths(images)
    if paths:
        with Image.open(paths[0]) as source:
            picture = source.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    else:
        generator = torch.Generator().manual_seed(seed)
        coarse = torch.rand(1, 3, max(2, height // 64), max(2, width // 64), generator=generator)
        fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
        array = (fine[0] * 255).round().byte().permute(1, 2, 0).contiguous().numpy()
        picture = Image.fromarray(array)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def centre_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """The image's centred largest square, resized to ``size``² and rounded to 8 bits (the quality benchmarks' crops)."""
    height, width = image.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return (resize_tensor(image[..., top : top + side, left : left + side], size, size).clamp(0, 1) * 255).round() / 255


def parse_size(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '4096x3072' -> (4096, 3072) as (width, height)."""
    text = text.lower().replace("×", "x")
    if "x" in text:
        w, h = text.split("x", 1)
        return int(w), int(h)
    return int(text), int(text)


def size_label(width: int, height: int) -> str:
    return f"{width}²" if width == height else f"{width}×{height}"


# ------------------------------------------------------------------------------ timing/memory
def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class PeakMemory:
    """Peak resident memory (CPU, bytes) or peak allocated CUDA memory between reset() and read().

    CPU: Linux's VmHWM, reset through /proc/self/clear_refs ("5"); elsewhere the process peak
    (ru_maxrss), which cannot be reset and is marked as such.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.resettable = True

    def reset(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.resettable = False

    def read(self) -> int:
        if self.device.startswith("cuda"):
            return int(torch.cuda.max_memory_allocated())
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        self.resettable = False
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def time_call(function: Callable[[], object], *, runs: int, warmup: int = 1, device: str = "cpu") -> list[float]:
    """Wall seconds of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    synchronize(device)
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        synchronize(device)
        out.append(time.perf_counter() - start)
    return out


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")


def fmt_s(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "–"
    if seconds >= 100:
        return f"{seconds:.0f}"
    if seconds >= 1:
        return f"{seconds:.2f}"
    if seconds >= 0.01:
        return f"{seconds:.3f}"
    return f"{seconds:.4f}"


def emit_report(results: dict, report: str, out: Path, markdown_path: Path | None) -> int:
    """Write the JSON (and the markdown, if asked), print the tables; the scripts' exit status."""
    write_json(out, results)
    if markdown_path:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(report + "\n")
    print(report)
    print(f"\nJSON: {out}  (wall time {results['wall_s']:.0f} s)")
    return 0
