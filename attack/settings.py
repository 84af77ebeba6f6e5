"""The knobs of each proof (LoRA training, sampling, img2img) as plain frozen dataclasses.

They live apart from the modules that run them (``lora.py``, ``img2img.py`` import diffusers and
peft) so that the command line can read their defaults for ``--help`` without importing a
diffusion library: ``python -m attack --help`` stays a fraction of a second of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Precision = Literal["auto", "no", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class LoraSettings:
    """How the mimic fine-tunes. Defaults: the budget of a ~2 minute GPU duel at 512² (docs/ATTACKS.md).

    ``mixed_precision="auto"``: off on CPU; on CUDA, autocast in the UNet's half dtype (fp16 when
    the UNet is fp32). ``gradient_checkpointing=None``: on for CUDA, off for CPU.
    """

    instance_prompt: str = "a photo of sks object"
    rank: int = 8
    alpha: float | None = None  # None -> alpha = rank (scale 1), the diffusers scripts' default
    steps: int = 200
    learning_rate: float = 2e-4
    resolution: int = 512
    batch_size: int = 1
    seed: int = 0
    mixed_precision: Precision = "auto"
    gradient_checkpointing: bool | None = None
    max_grad_norm: float = 1.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class SampleSettings:
    """How the mimic samples from the fine-tuned model. ``prompt=None`` uses the instance prompt."""

    prompt: str | None = None
    count: int = 4
    steps: int = 25
    guidance_scale: float = 7.5
    resolution: int = 512
    seed: int = 0


@dataclass(frozen=True)
class Img2ImgSettings:
    """SDEdit knobs. strength in (0, 1]; ``steps × strength`` denoising steps actually run."""

    prompt: str = "a high quality, detailed image"
    negative_prompt: str | None = None
    strength: float = 0.5
    steps: int = 30
    guidance_scale: float = 7.5
    seed: int = 0
    max_side: int = 768  # long side the model runs at (SD-1.5 is trained at 512; larger costs memory)
