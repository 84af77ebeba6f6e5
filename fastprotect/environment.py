"""Every ``FASTPROTECT_*`` environment variable, with its default and meaning, in one list.

Code reads a variable only through :func:`get` (an unknown name is a bug, not a silent None), and
docs/CONFIGURATION.md is this list printed by ``python -m fastprotect.environment`` (a test keeps
the two equal). Library variables change where weights come from and what input is accepted; Space
variables change the web page's limits. None is needed on a fresh machine: the bundled default
checkpoint (``checkpoints/taef2-generator``, fastprotect.bundle) carries its encoder and LPIPS backbone.
The paragraphs above the table in docs/CONFIGURATION.md are written by hand: keep them in step with this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    default: str  # as a person would write it; "—" when unset means "not used"
    meaning: str
    scope: str  # "library" or "Space"


VARIABLES: tuple[Variable, ...] = (
    Variable("FASTPROTECT_CHECKPOINT", "the bundled `checkpoints/taef2-generator`",
             "Generator or mixture checkpoint: a local folder or a Hub repo id. Same as `--checkpoint`.", "library"),
    Variable("FASTPROTECT_ENCODER_SOURCE", "—",
             "Encoder weights for whatever encoder kind is in use: a folder, a file or a Hub repo id. Same as `--encoder-source`; wins over the per-kind variables.", "library"),
    Variable("FASTPROTECT_SD_VAE", "`stable-diffusion-v1-5/stable-diffusion-v1-5` (subfolder `vae`)",
             "Where the Stable Diffusion VAE (encoder kind `sd-vae`) comes from when no checkpoint bundles it.", "library"),
    Variable("FASTPROTECT_TAESD", "`madebyollin/taesd`",
             "Where TAESD (encoder kind `taesd`, the tiny SD-1.5 autoencoder) comes from when no checkpoint bundles it.", "library"),
    Variable("FASTPROTECT_TAEF2", "`madebyollin/taef2`",
             "Where TAEF2 (encoder kind `taef2`, the tiny FLUX.2 autoencoder) comes from when no checkpoint bundles it.", "library"),
    Variable("FASTPROTECT_ENCODER_KIND", "`taef2`",
             "Encoder of the per-image (PGD) mode, used when there is no mixture checkpoint: `sd-vae`, `taesd` or `taef2`. Same as `--encoder-kind`.", "library"),
    Variable("FASTPROTECT_LPIPS_BACKBONE", "the checkpoint's bundled backbone, else torchvision's download",
             "LPIPS backbone: a torchvision-style `.safetensors` file, or a folder holding `alexnet_lpips_features.safetensors`. Same as `--lpips-backbone`.", "library"),
    Variable("FASTPROTECT_MAX_PIXELS", "40000000",
             "Largest image (width × height) the library and CLI accept; checked from the header before decoding. Same as `--max-pixels`.", "library"),
    Variable("FASTPROTECT_MIMIC_BASE", "the checkpoint's mimic family (FLUX.2 [klein] 4B for the bundled one)",
             "Diffusion model the Space's proof tabs (img2img, LoRA duel) attack with: a Hub repo id or a local diffusers folder of that family.", "Space"),
    Variable("FASTPROTECT_MAX_FILE_SIZE", "25mb", "Largest upload Gradio accepts, per file.", "Space"),
    Variable("FASTPROTECT_SPACE_MAX_PIXELS", "24000000", "Largest image (width × height) the Space accepts.", "Space"),
    Variable("FASTPROTECT_MAX_BATCH_FILES", "20", "Most files in one Batch-tab request.", "Space"),
    Variable("FASTPROTECT_CONCURRENCY", "2", "Requests of one kind processed at once (the rest wait in the queue).", "Space"),
    Variable("FASTPROTECT_QUEUE_SIZE", "32", "Requests that may wait in the queue before new ones are turned away.", "Space"),
    Variable("FASTPROTECT_FILE_MAX_AGE", "900",
             "Seconds after which the Space deletes a visitor's upload, its results and Gradio's copies of them (a timer checks every 30 s, or a tenth of a shorter age).", "Space"),
    Variable("FASTPROTECT_SCREENSHOTS", "a temporary folder",
             "Where the browser tests save their screenshots (`docs/images` regenerates the docs' pictures).", "tests"),
    Variable("FASTPROTECT_SHARED", "`../shared` beside the repository",
             "Folder with this team's offline real weights and images, used by tests, benchmarks and evaluation when present.", "tests"),
)

_BY_NAME = {variable.name: variable for variable in VARIABLES}


def get(name: str) -> str | None:
    """The value of a registered variable, or None when unset or empty. Unknown names raise KeyError."""
    if name not in _BY_NAME:
        raise KeyError(f"{name} is not a registered FASTPROTECT_* variable (fastprotect/environment.py)")
    return os.environ.get(name) or None


def get_int(name: str, default: int) -> int:
    """A registered variable read as a positive integer; a bad value is a one-line ``ValueError``."""
    raw = get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


def markdown_table() -> str:
    """The list as the Markdown table docs/CONFIGURATION.md holds."""
    lines = ["| variable | scope | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{v.name}` | {v.scope} | {v.default} | {v.meaning} |" for v in VARIABLES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
