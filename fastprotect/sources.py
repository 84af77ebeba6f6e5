"""Where every weight comes from, decided in one place.

Precedence, for every kind of weight: the caller's argument (a flag) → the environment variable
→ the checkpoint's bundle (files shipped inside the mixture checkpoint folder) → the Hugging Face
Hub default. The first that names something wins; nothing further is tried, so a wrong path is
reported as wrong instead of being papered over by a download (and an offline machine with the
bundle makes no network call at all).

Bundle layout (inside a checkpoint folder, beside config.json and model.safetensors):
``taef2.safetensors`` / ``taesd.safetensors`` (tiny autoencoder, diffusers single-file layout: both
halves), or ``vae/`` (a diffusers AutoencoderKL folder) for an SD-VAE checkpoint, and
``alexnet_lpips_features.safetensors`` (LPIPS backbone + heads, torchvision-style keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import environment
from .hub import is_local
from .vocabulary import AutoencoderKind

Origin = Literal["argument", "environment", "checkpoint bundle", "bundled", "Hub default", "download"]

# The Hub defaults. sd-vae: the VAE that SD-1.5 fine-tuning and img2img run (its encoder is
# bit-identical to stabilityai/sd-vae-ft-mse's). taef2: madebyollin/taef2 holds one file,
# taef2.safetensors, in the diffusers layout.
HUB_DEFAULTS: dict[AutoencoderKind, tuple[str, str | None]] = {
    "sd-vae": ("stable-diffusion-v1-5/stable-diffusion-v1-5", "vae"),
    "taesd": ("madebyollin/taesd", None),
    "taef2": ("madebyollin/taef2", None),
}
# The per-kind variables (FASTPROTECT_ENCODER_SOURCE wins over them).
KIND_ENV_VARS: dict[AutoencoderKind, str] = {
    "sd-vae": "FASTPROTECT_SD_VAE",
    "taesd": "FASTPROTECT_TAESD",
    "taef2": "FASTPROTECT_TAEF2",
}
LPIPS_BUNDLE_FILE = "alexnet_lpips_features.safetensors"


@dataclass(frozen=True)
class WeightSource:
    """A resolved location: a local path or a Hub repo id, with the subfolder to read and why it was chosen."""

    location: str
    origin: Origin
    subfolder: str | None = None

    def describe(self) -> str:
        where = f"{self.location}" + (f" (subfolder {self.subfolder})" if self.subfolder else "")
        return f"{where} [{self.origin}]"


def bundled_encoder_files(folder: Path, kind: AutoencoderKind) -> bool:
    """True when a checkpoint folder carries weights for an encoder of ``kind``."""
    if kind == "sd-vae":
        return (folder / "vae" / "config.json").is_file()
    return (folder / f"{kind}.safetensors").is_file() or any((folder / f"{kind}_encoder{ext}").is_file() for ext in (".safetensors", ".pth"))


def encoder_source(kind: AutoencoderKind, *, argument: str | Path | None = None, bundle: Path | None = None,
                   hub_default: tuple[str, str | None] | None = None) -> WeightSource:
    """Where the ``kind`` autoencoder's weights come from.

    ``bundle``: the local checkpoint folder (None without a checkpoint). ``hub_default``: the
    (repo, subfolder) a checkpoint names, else :data:`HUB_DEFAULTS`.
    """
    if argument is not None:
        return WeightSource(str(argument), "argument")
    for name in ("FASTPROTECT_ENCODER_SOURCE", KIND_ENV_VARS[kind]):
        value = environment.get(name)
        if value is not None:
            return WeightSource(value, "environment")
    if bundle is not None and bundled_encoder_files(bundle, kind):
        return WeightSource(str(bundle), "checkpoint bundle", "vae" if kind == "sd-vae" else None)
    repo, subfolder = hub_default or HUB_DEFAULTS[kind]
    if is_local(repo):  # a checkpoint trained on a local copy names its folder
        return WeightSource(repo, "Hub default", subfolder if (Path(repo) / str(subfolder)).is_dir() else None)
    return WeightSource(repo, "Hub default", subfolder)


def lpips_source(*, argument: str | Path | None = None, bundle: Path | None = None) -> WeightSource:
    """Where the LPIPS AlexNet backbone comes from; ``origin == "download"`` means torchvision's own."""
    if argument is not None:
        return WeightSource(str(argument), "argument")
    value = environment.get("FASTPROTECT_LPIPS_BACKBONE")
    if value is not None:
        return WeightSource(value, "environment")
    if bundle is not None and (bundle / LPIPS_BUNDLE_FILE).is_file():
        return WeightSource(str(bundle / LPIPS_BUNDLE_FILE), "checkpoint bundle")
    return WeightSource("torchvision ImageNet weights", "download")


def checkpoint_source(argument: str | Path | None = None) -> WeightSource:
    """Which checkpoint (generator or mixture) to load: argument → FASTPROTECT_CHECKPOINT → the bundled one."""
    if argument is not None:
        return WeightSource(str(argument), "argument")
    value = environment.get("FASTPROTECT_CHECKPOINT")
    if value is not None:
        return WeightSource(value, "environment")
    from .bundle import bundled_checkpoint

    return WeightSource(str(bundled_checkpoint()), "bundled")


def checkpoint_method(location: str) -> str:
    """Which method a checkpoint holds, from its ``config.json``: "generator" when the config says
    ``"method": "generator"`` (fastprotect.generator), else "mixture" (whose configs carry no
    ``method`` field). Fetching problems are the loaders' one-line errors."""
    import json

    from .hub import resolve_file

    path = resolve_file(location, "config.json", hint="Pass a local checkpoint folder (--checkpoint or FASTPROTECT_CHECKPOINT).")
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return "mixture"  # the mixture loader reports the unreadable file with its own error
    return "generator" if isinstance(raw, dict) and raw.get("method") == "generator" else "mixture"


def local_folder(location: str) -> Path | None:
    """The local folder of a checkpoint location: itself when local, the Hub cache snapshot when a
    Hub id was already downloaded (no network call), else None."""
    path = Path(location).expanduser()
    if path.is_dir():
        return path
    if is_local(location):
        return path.parent
    from huggingface_hub import snapshot_download

    try:  # the mixture loader has just fetched this repo; reuse its cache, never the network
        return Path(snapshot_download(location, local_files_only=True))
    except Exception:
        return None
