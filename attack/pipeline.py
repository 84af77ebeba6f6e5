"""Loading the base diffusion model and the small image/device helpers every attack shares.

The base is SD-1.5 by Hub id (:data:`DEFAULT_BASE`), a local diffusers folder, or the random
dummy stack (:func:`fastprotect.dummy.dummy_sd15_pipeline`). Images cross this module's functions as
B×3×H×W float tensors in [0, 1]; the conversion to diffusers' [-1, 1] happens inside the
pipelines (``VaeImageProcessor``) or right at a VAE call, never in the caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from fastprotect.hub import WeightsUnavailableError, is_local
from fastprotect.images import fit_within, resize_tensor

DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
BASE_HINT = (
    "Point --base (or the `base` argument) at a local diffusers folder of Stable Diffusion 1.5 "
    "(the layout `save_pretrained` writes: model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
    "scheduler/), or use --dummy for the random-weight stack that only checks the plumbing."
)
DeviceSpec = str | torch.device


def resolve_device(device: DeviceSpec = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """float16 on CUDA (half the memory, SD-1.5's VAE and UNet are fp16-safe), float32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator: diffusers draws CPU noise and moves it, so a seed gives the same noise on
    CPU and GPU, and nothing depends on the global RNG."""
    return torch.Generator("cpu").manual_seed(seed)


def load_pipeline(
    base: str | Path = DEFAULT_BASE,
    *,
    dummy: bool = False,
    device: DeviceSpec = "auto",
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> StableDiffusionPipeline:
    """The base text-to-image pipeline on ``device`` (``dtype`` defaults by device), progress bars off.

    ``dummy=True`` ignores ``base`` and builds the random stack from ``seed`` (float32). A Hub id that
    cannot be fetched (offline, unknown) raises :class:`fastprotect.hub.WeightsUnavailableError`.
    """
    target = resolve_device(device)
    if dummy:
        from fastprotect.dummy import dummy_sd15_pipeline

        return dummy_sd15_pipeline(seed).to(target)
    dtype = dtype or default_dtype(target)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(str(base), torch_dtype=dtype)
    except Exception as error:  # offline, missing repo, incomplete folder: one clear message
        where = "local folder" if is_local(base) else "Hugging Face Hub repo"
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsUnavailableError(
            f"Could not load the diffusion model from {where} {str(base)!r} ({type(error).__name__}: {first_line}). "
            f"The Hub may be unreachable (HF_HUB_OFFLINE set or no network). {BASE_HINT}"
        ) from error
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(target)


def module_device(module: object, fallback: torch.device) -> torch.device:
    """Where ``module``'s weights live: its ``device`` (or its ``encoder``'s, for the library's
    Autoencoder), else its first parameter's, else ``fallback``."""
    for holder in (module, getattr(module, "encoder", None)):
        if isinstance(getattr(holder, "device", None), torch.device):
            return holder.device
    parameter = next(iter(module.parameters()), None) if isinstance(module, torch.nn.Module) else None
    return parameter.device if parameter is not None else fallback


def stack_images(images: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    """A B×3×H×W tensor or a list of 1×3×H×W / 3×H×W tensors (sizes may differ) -> list of 1×3×H×W."""
    if isinstance(images, torch.Tensor):
        images = list(images.unsqueeze(0) if images.dim() == 3 else images.split(1))
    items = [image.unsqueeze(0) if image.dim() == 3 else image for image in images]
    if not items:
        raise ValueError("no images given")
    for image in items:
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"expected RGB images 1×3×H×W in [0, 1], got shape {tuple(image.shape)}")
    return items


def resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bilinear resize of B×3×H×W [0, 1] images, kept in [0, 1]."""
    if tuple(images.shape[-2:]) == (height, width):
        return images
    return resize_tensor(images.float(), height, width).clamp(0, 1)


def working_size(height: int, width: int, *, multiple: int = 8, max_side: int | None = None) -> tuple[int, int]:
    """The H×W a pipeline runs at for an H×W input: long side at most ``max_side`` (aspect kept),
    each side a multiple of ``multiple`` (SD needs sides divisible by the VAE's 8)."""
    return fit_within(height, width, max_side, multiple=multiple)


def center_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop to a square, then resize: 1×3×H×W -> 1×3×size×size (DreamBooth's preprocessing)."""
    height, width = image.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return resize(image[..., top : top + side, left : left + side], size, size)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block, restoring the count after.

    For tiny models op dispatch dominates and a second OpenMP thread only waits; on a machine whose
    cores are busy with other work, spinning threads cost 2–4× wall time (measured here: TAEF2
    PGD step at 192², 1.2 s on one thread vs 4.7 s on two).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
