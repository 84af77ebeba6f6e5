"""The FLUX.2 [klein] mimic: loading, "what the model sees" (VAE round trip) and img2img-style edits.

FLUX.2 [klein] 4B (Apache-2.0) is a flow-matching transformer over the 32-channel latent of
``AutoencoderKLFlux2`` — the VAE that TAEF2, and so the shipped protection checkpoint, stands in
for. diffusers runs it with ``Flux2KleinPipeline`` (text encoder: a Qwen3 causal LM whose hidden
states from layers 9, 18 and 27 are stacked into the prompt embedding; tokenizer: Qwen2's). The
latent the transformer sees is the VAE's mean, folded 2×2 into 128 channels ("patchified") and
normalised by the VAE's batch-norm running statistics, then flattened into tokens.

Two edits are offered (:class:`Flux2EditSettings.mode`):

* ``"reference"`` (default): the pipeline's own image conditioning. The image is encoded and its
  latent tokens are appended to the sequence the transformer attends to, while the output is
  generated from pure noise: "make this image, edited by the prompt". This is how klein edits.
* ``"sdedit"``: SDEdit on the same pipeline. The image's latent is noised to ``strength`` of the
  flow-matching schedule and denoised from there (the pipeline's ``latents`` and ``sigmas``
  arguments): the counterpart of SD-1.5's img2img.

Images cross this module as B×3×H×W float tensors in [0, 1]; [-1, 1] only at VAE calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline
from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

from fastprotect.hub import WeightsUnavailableError, is_local

from .compare import to_pil
from .families import family_spec
from .pipeline import DeviceSpec, resize, resolve_device, seeded_generator, stack_images

SPEC = family_spec("flux.2-klein")
TRAIN_BASE = SPEC.train_id  # black-forest-labs/FLUX.2-klein-base-4B: the LoRA trains here
SAMPLE_BASE = SPEC.sample_id  # black-forest-labs/FLUX.2-klein-4B: samples and edits
DEFAULT_TEXT_LAYERS = (9, 18, 27)  # Flux2KleinPipeline's default hidden-state layers
MAX_PROMPT_TOKENS = 512  # Flux2KleinPipeline's default padded prompt length
MIN_REFERENCE_SIDE = 64  # Flux2ImageProcessor.check_image_input rejects smaller reference images
FLUX2_HINT = (
    "Point --base (the model the LoRA trains on, default FLUX.2-klein-base-4B) and --sample-base (the model "
    "that samples and edits, default FLUX.2-klein-4B) at local diffusers folders of FLUX.2 [klein] "
    "(model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/), or use --dummy for the "
    "random-weight stack that only checks the plumbing."
)
EditMode = Literal["reference", "sdedit"]


def flux2_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA (FLUX models are trained and shipped in bf16; fp16 overflows), else float32."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _unavailable(source: str | Path, error: Exception, what: str) -> WeightsUnavailableError:
    """One message for every way a load fails (offline, unknown repo, incomplete folder)."""
    where = "local folder" if is_local(source) else "Hugging Face Hub repo"
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    return WeightsUnavailableError(
        f"Could not load the FLUX.2 {what} from {where} {str(source)!r} ({type(error).__name__}: {first_line}). "
        f"The Hub may be unreachable (HF_HUB_OFFLINE set or no network). {FLUX2_HINT}"
    )


def load_flux2_pipeline(
    source: str | Path = SAMPLE_BASE,
    *,
    device: DeviceSpec = "auto",
    dtype: torch.dtype | None = None,
    share_from: Flux2KleinPipeline | None = None,
) -> Flux2KleinPipeline:
    """A ``Flux2KleinPipeline`` from a Hub id or local folder, on ``device``, progress bars off.

    ``share_from``: a loaded pipeline whose VAE, text encoder and tokenizer are reused (base and
    distilled klein share them), so only the transformer and scheduler are read. ``dtype``
    defaults to :func:`flux2_dtype`. Raises :class:`WeightsUnavailableError` with one line of cause.
    """
    target = resolve_device(device)
    shared = {}
    if share_from is not None:
        shared = {"vae": share_from.vae, "text_encoder": share_from.text_encoder, "tokenizer": share_from.tokenizer}
    try:
        pipe = Flux2KleinPipeline.from_pretrained(str(source), torch_dtype=dtype or flux2_dtype(target), **shared)
    except Exception as error:
        raise _unavailable(source, error, "pipeline") from error
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(target)


def load_flux2_pair(
    train_source: str | Path | None = None,
    sample_source: str | Path | None = None,
    *,
    dummy: bool = False,
    device: DeviceSpec = "auto",
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> tuple[Flux2KleinPipeline, Flux2KleinPipeline]:
    """(the pipeline the LoRA trains on, the pipeline that samples and edits).

    Defaults: klein base 4B and klein 4B, sharing VAE and text encoder. Give the same source twice
    to run everything on one model (one transformer in memory). ``dummy=True``: the random stack of
    :func:`fastprotect.dummy.dummy_flux2_pipelines` from ``seed`` (float32), sources ignored.
    """
    target = resolve_device(device)
    if dummy:
        from fastprotect.dummy import dummy_flux2_pipelines

        base, distilled = dummy_flux2_pipelines(seed)
        return base.to(target), distilled.to(target)
    train_source, sample_source = train_source or TRAIN_BASE, sample_source or SAMPLE_BASE
    trainer = load_flux2_pipeline(train_source, device=target, dtype=dtype)
    if str(sample_source) == str(train_source):
        return trainer, trainer
    return trainer, load_flux2_pipeline(sample_source, device=target, dtype=dtype, share_from=trainer)


def load_flux2_vae(source: str | Path | None = None, *, device: DeviceSpec = "auto", dtype: torch.dtype = torch.float32) -> AutoencoderKLFlux2:
    """The FLUX.2 VAE alone (``vae/`` of a klein repo or folder, default klein 4B's), frozen, eval mode."""
    source = source or SAMPLE_BASE
    subfolder = None if is_local(source) and (Path(source) / "config.json").is_file() else "vae"
    try:
        vae = AutoencoderKLFlux2.from_pretrained(str(source), subfolder=subfolder, torch_dtype=dtype)
    except Exception as error:
        raise _unavailable(source, error, "VAE") from error
    return vae.to(resolve_device(device)).eval().requires_grad_(False)


def text_options(pipe: Flux2KleinPipeline) -> dict[str, Any]:
    """The prompt-encoding arguments every pipeline call and the LoRA use, read off the modules.

    Real klein: 512 tokens, hidden states of layers (9, 18, 27) of the 36-layer Qwen3. A shallower
    encoder (the tiny stack) uses layers at a third, two thirds and the end of its depth, and a
    tokenizer with a shorter ``model_max_length`` pads to that.
    """
    depth = pipe.text_encoder.config.num_hidden_layers
    layers = DEFAULT_TEXT_LAYERS if depth >= max(DEFAULT_TEXT_LAYERS) else (depth // 3, 2 * depth // 3, depth)
    return {"max_sequence_length": min(MAX_PROMPT_TOKENS, pipe.tokenizer.model_max_length), "text_encoder_out_layers": layers}


def bn_stats(vae: AutoencoderKLFlux2) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's batch-norm mean and std over patchified channels, each 1×4C×1×1 float32."""
    mean = vae.bn.running_mean.float().view(1, -1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.float().view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    return mean, std


@torch.no_grad()
def encode_latents(pipe: Flux2KleinPipeline, images: torch.Tensor) -> torch.Tensor:
    """B×3×H×W [0, 1] images (sides multiples of 2× the VAE scale) -> the transformer's latent
    space: B×4C×H/(2s)×W/(2s) float32 (s = VAE downscale; real: 128 channels at H/16).

    The posterior mean (as the pipeline encodes reference images and the diffusers LoRA script
    encodes training images), patchified with the pipeline's own layout, batch-norm normalised.
    """
    vae = pipe.vae
    latents = vae.encode((images * 2 - 1).to(vae.device, vae.dtype)).latent_dist.mode()
    # The pipeline's static helper, not a copy: token layout must match what it unpacks.
    patches = Flux2KleinPipeline._patchify_latents(latents).float()
    mean, std = bn_stats(vae)
    return (patches - mean.to(patches.device)) / std.to(patches.device)


class Flux2VaeView(torch.nn.Module):
    """"What a FLUX.2 mimic sees": encode to the posterior mean and decode, with the real
    ``AutoencoderKLFlux2``. Has ``round_trip`` so :func:`attack.roundtrip.round_trip` and
    :func:`attack.roundtrip.roundtrip_report` take it like the library's autoencoders."""

    def __init__(self, vae: AutoencoderKLFlux2) -> None:
        super().__init__()
        self.vae = vae

    @property
    def scale(self) -> int:
        """Pixels per latent cell (real FLUX.2 VAE: 8)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def round_trip(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W [0, 1] (sides multiples of :attr:`scale`) -> the same shape, [0, 1], float32.

        No batch norm here: it normalises latents for the transformer and cancels in a round trip."""
        vae = self.vae
        latents = vae.encode((images * 2 - 1).to(vae.device, vae.dtype)).latent_dist.mode()
        return ((vae.decode(latents).sample.float() + 1) / 2).clamp(0, 1)


def flux2_round_trip(vae: AutoencoderKLFlux2 | Flux2KleinPipeline, images: torch.Tensor, *, max_side: int | None = None) -> torch.Tensor:
    """Encode + decode B×3×H×W [0, 1] images of any size with the FLUX.2 VAE (or a pipeline's);
    returns the input's shape, [0, 1], on its device. Runs at sides rounded to a multiple of 8,
    long side capped at ``max_side``, like :func:`attack.roundtrip.round_trip`."""
    from .roundtrip import round_trip

    return round_trip(Flux2VaeView(getattr(vae, "vae", vae)), images, max_side=max_side)


@dataclass(frozen=True)
class Flux2EditSettings:
    """Edit knobs for klein. Defaults suit the step-distilled klein 4B (4 steps, no guidance).

    ``mode``: ``"reference"`` (the image conditions generation; ``strength`` unused) or
    ``"sdedit"`` (``round(steps × strength)`` of the ``steps``-step schedule are run from the
    noised image). ``guidance_scale`` > 1 runs classifier-free guidance with an empty negative
    prompt on undistilled models; distilled ones ignore it.
    """

    prompt: str = "a high quality, detailed image"
    mode: EditMode = "reference"
    strength: float = 0.5
    steps: int = 4
    guidance_scale: float = 1.0
    seed: int = 0
    max_side: int = 768


def edit_size(height: int, width: int, multiple: int, max_side: int) -> tuple[int, int]:
    """The H×W an edit runs at: long side at most ``max_side``, short side at least 64 (the
    pipeline's minimum for reference images; small inputs are scaled up), aspect kept, sides
    rounded to ``multiple``."""
    scale = min(1.0, max_side / max(height, width))
    scale = max(scale, MIN_REFERENCE_SIDE / min(height, width))
    # Unlike fastprotect.images.fit_within this may enlarge: the pipeline refuses small references.
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (height, width))  # type: ignore[return-value]


def _reference_edit(pipe: Flux2KleinPipeline, image: torch.Tensor, settings: Flux2EditSettings, height: int, width: int) -> torch.Tensor:
    """Generate from noise with ``image`` (1×3×height×width, [0, 1]) as the reference."""
    return pipe(
        image=[to_pil(image)],  # the pipeline's reference path takes PIL images only
        prompt=settings.prompt,
        height=height,
        width=width,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        generator=seeded_generator(settings.seed),
        output_type="pt",
        **text_options(pipe),
    ).images


def sdedit_schedule(pipe: Flux2KleinPipeline, steps: int, strength: float, height: int, width: int) -> tuple[list[float], float]:
    """The unshifted sigmas to hand the pipeline for the last ``round(steps × strength)`` steps of
    a ``steps``-step run, and the first *shifted* sigma, i.e. the noise level to start from.

    The pipeline shifts whatever sigmas it gets by ``mu`` (from the token count and ``steps``);
    the shift acts elementwise, so the tail of the default ``linspace(1, 1/steps)`` becomes exactly
    the tail of the full shifted schedule. A scheduler copy applies that shift to read the start.
    """
    run = min(steps, max(1, round(steps * strength)))
    tail = np.linspace(1.0, 1.0 / steps, steps)[steps - run :]
    tokens = (height // (2 * pipe.vae_scale_factor)) * (width // (2 * pipe.vae_scale_factor))
    probe = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    probe.set_timesteps(sigmas=tail, mu=compute_empirical_mu(image_seq_len=tokens, num_steps=steps))
    return tail.tolist(), float(probe.sigmas[0])


def _sdedit(pipe: Flux2KleinPipeline, image: torch.Tensor, settings: Flux2EditSettings, height: int, width: int) -> torch.Tensor:
    """Noise ``image``'s latent to the schedule's start (flow matching: (1−σ)·x0 + σ·noise) and
    denoise the rest of the schedule with the prompt."""
    if not 0 < settings.strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {settings.strength}")
    sigmas, start = sdedit_schedule(pipe, settings.steps, settings.strength, height, width)
    clean = encode_latents(pipe, image)
    generator = seeded_generator(settings.seed)
    noise = torch.randn(clean.shape, generator=generator).to(clean.device)
    return pipe(
        prompt=settings.prompt,
        height=height,
        width=width,
        num_inference_steps=settings.steps,  # sets mu; the run is the len(sigmas) steps
        sigmas=sigmas,
        latents=(1 - start) * clean + start * noise,
        guidance_scale=settings.guidance_scale,
        generator=generator,
        output_type="pt",
        **text_options(pipe),
    ).images


@torch.no_grad()
def flux2_img2img(
    pipe: Flux2KleinPipeline, images: torch.Tensor | list[torch.Tensor], settings: Flux2EditSettings = Flux2EditSettings()
) -> list[torch.Tensor]:
    """Edit each image (1×3×H×W or a batch, [0, 1]) with klein; returns a list of 1×3×H×W [0, 1]
    tensors, each the size of its input. Every image gets the same seed, so a clean and a
    protected copy are edited with identical noise and only their pixels differ."""
    if settings.mode not in ("reference", "sdedit"):
        raise ValueError(f"mode must be 'reference' or 'sdedit', got {settings.mode!r}")
    edit = _reference_edit if settings.mode == "reference" else _sdedit
    outputs = []
    for image in stack_images(images):
        height, width = image.shape[-2:]
        run_height, run_width = edit_size(height, width, 2 * pipe.vae_scale_factor, settings.max_side)
        result = edit(pipe, resize(image, run_height, run_width), settings, run_height, run_width)
        outputs.append(resize(result.float().cpu(), height, width))
    return outputs
