"""One entry point per proof, whatever the mimic family: the only place that dispatches on it.

:func:`load_mimic` gives a :class:`Mimic` (the pipeline a LoRA trains on and the pipeline that
samples and edits); :func:`family_round_trip`, :func:`family_img2img`,
:func:`family_train_lora` / :func:`family_samples` and :func:`family_lora_duel` run the three proofs
on it, with the family's defaults (:func:`default_settings`) unless settings are given. Images:
B×3×H×W or lists of 1×3×H×W float tensors in [0, 1] in and out.

* ``"sd-1.5"``: :mod:`attack.pipeline`, :mod:`attack.img2img` (SDEdit), :mod:`attack.lora`;
  trainer and sampler are the same ``StableDiffusionPipeline``.
* ``"flux.2-klein"``: :mod:`attack.flux2` (reference edit or SDEdit) and :mod:`attack.flux2_lora`;
  the LoRA trains on klein base 4B and is sampled with klein 4B.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from .families import MimicFamily, family_spec
from .img2img import Img2ImgSettings
from .lora import DuelResult, LoraRun, LoraSettings, ProgressCallback, SampleSettings, remove_lora, use_lora
from .pipeline import DeviceSpec

DuelProgress = Callable[[str, int, int, float], None]  # (name, step, total, loss)


@dataclass
class Mimic:
    """A loaded mimic. ``trainer``: the pipeline LoRAs train on; ``sampler``: the one that samples
    and edits (the same object for SD-1.5, or when one model does both)."""

    family: MimicFamily
    trainer: DiffusionPipeline
    sampler: DiffusionPipeline

    @property
    def device(self) -> torch.device:
        return self.sampler.device


def as_mimic(pipe: Mimic | DiffusionPipeline) -> Mimic:
    """A :class:`Mimic` as is; a bare SD-1.5 pipeline (what the Space and CLI passed so far) wrapped."""
    return pipe if isinstance(pipe, Mimic) else Mimic("sd-1.5", pipe, pipe)


def load_mimic(
    family: MimicFamily = "sd-1.5",
    base: str | Path | None = None,
    *,
    sample_base: str | Path | None = None,
    dummy: bool = False,
    device: DeviceSpec = "auto",
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> Mimic:
    """Load ``family``'s models: ``base`` (Hub id or local folder; default the family's training
    id) and, for FLUX.2, ``sample_base`` (default klein 4B; pass ``base`` again for one model).
    ``dummy``: the family's random-weight stack from ``seed``. Unreachable weights raise
    :class:`fastprotect.hub.WeightsUnavailableError` with a one-paragraph hint."""
    spec = family_spec(family)
    if spec.name == "sd-1.5":
        from .pipeline import load_pipeline

        pipe = load_pipeline(base or spec.train_id, dummy=dummy, device=device, dtype=dtype, seed=seed)
        return Mimic("sd-1.5", pipe, pipe)
    from .flux2 import load_flux2_pair

    trainer, sampler = load_flux2_pair(base, sample_base, dummy=dummy, device=device, dtype=dtype, seed=seed)
    return Mimic("flux.2-klein", trainer, sampler)


def default_settings(family: MimicFamily) -> dict[str, Any]:
    """The family's defaults: ``{"lora": LoraSettings, "sampling": SampleSettings, "edit": ...}``
    (edit: :class:`attack.img2img.Img2ImgSettings` or :class:`attack.flux2.Flux2EditSettings`)."""
    if family_spec(family).name == "sd-1.5":
        return {"lora": LoraSettings(), "sampling": SampleSettings(), "edit": Img2ImgSettings()}
    from .flux2 import Flux2EditSettings
    from .flux2_lora import FLUX2_LORA, FLUX2_SAMPLING

    return {"lora": FLUX2_LORA, "sampling": FLUX2_SAMPLING, "edit": Flux2EditSettings()}


def lora_settings(family: MimicFamily, **changes: Any) -> LoraSettings:
    """The family's :class:`LoraSettings` with ``changes`` applied (e.g. ``steps=50``)."""
    return replace(default_settings(family)["lora"], **changes)


def sample_settings(family: MimicFamily, **changes: Any) -> SampleSettings:
    """The family's :class:`SampleSettings` with ``changes`` applied."""
    return replace(default_settings(family)["sampling"], **changes)


def edit_settings(family: MimicFamily, **changes: Any) -> Any:
    """The family's edit settings with ``changes`` applied (keys the family does not have, such
    as ``mode`` for SD-1.5 or ``negative_prompt`` for FLUX.2, are dropped)."""
    settings = default_settings(family)["edit"]
    known = {key: value for key, value in changes.items() if key in settings.__dataclass_fields__}
    return replace(settings, **known)


def family_autoencoder(mimic: Mimic) -> Any:
    """The sampler's VAE as a round-tripper for :func:`attack.roundtrip.roundtrip_report`."""
    if mimic.family == "sd-1.5":
        from .roundtrip import pipeline_autoencoder

        return pipeline_autoencoder(mimic.sampler.vae)
    from .flux2 import Flux2VaeView

    return Flux2VaeView(mimic.sampler.vae)


def family_round_trip(mimic: Mimic, images: torch.Tensor, *, max_side: int | None = 768) -> torch.Tensor:
    """"What the mimic's model sees": B×3×H×W [0, 1] through its VAE, encode + decode, same shape."""
    from .roundtrip import round_trip

    return round_trip(family_autoencoder(mimic), images, max_side=max_side)


def family_img2img(mimic: Mimic, images: torch.Tensor | list[torch.Tensor], settings: Any = None) -> list[torch.Tensor]:
    """Edit each image with the family's img2img (SD-1.5: SDEdit; FLUX.2: reference edit or SDEdit
    per ``settings.mode``); list of 1×3×H×W [0, 1], input sizes, one seed for all images."""
    settings = settings or default_settings(mimic.family)["edit"]
    if mimic.family == "sd-1.5":
        from .img2img import img2img

        return img2img(mimic.sampler, images, settings)
    from .flux2 import flux2_img2img

    return flux2_img2img(mimic.sampler, images, settings)


def family_train_lora(
    mimic: Mimic, images: torch.Tensor | list[torch.Tensor], settings: LoraSettings | None = None, *, progress: ProgressCallback | None = None
) -> LoraRun:
    """Train one LoRA on the trainer and take it off again; sample it with :func:`family_samples`
    after :func:`family_save_lora` (the sampler may be another model)."""
    settings = settings or default_settings(mimic.family)["lora"]
    if mimic.family == "sd-1.5":
        from .lora import train_lora as train
    else:
        from .flux2_lora import train_flux2_lora as train
    run = train(mimic.trainer, images, settings, progress=progress)
    remove_lora(mimic.trainer)
    return run


def family_save_lora(mimic: Mimic, run: LoraRun, directory: str | Path) -> Path:
    """Write ``run`` in diffusers' LoRA format for the family's pipeline class, plus training.json."""
    if mimic.family == "sd-1.5":
        from .lora import save_lora as save
    else:
        from .flux2_lora import save_flux2_lora as save
    return save(run, directory)


def family_samples(mimic: Mimic, settings: SampleSettings | None = None, *, adapter: str | Path | None = None) -> torch.Tensor:
    """count×3×res×res [0, 1] samples from the sampler, with the saved LoRA folder ``adapter``
    loaded for the call (None: the model as it stands)."""
    settings = settings or default_settings(mimic.family)["sampling"]
    if mimic.family == "sd-1.5":
        from .lora import generate_samples as generate
    else:
        from .flux2_lora import generate_flux2_samples as generate
    if adapter is None:
        return generate(mimic.sampler, settings)
    with use_lora(mimic.sampler, adapter):
        return generate(mimic.sampler, settings)


def family_lora_duel(
    mimic: Mimic,
    clean_images: torch.Tensor | list[torch.Tensor],
    protected_images: torch.Tensor | list[torch.Tensor],
    output_dir: str | Path,
    settings: LoraSettings | None = None,
    sampling: SampleSettings | None = None,
    *,
    progress: DuelProgress | None = None,
) -> DuelResult:
    """The clean-vs-protected LoRA duel on the mimic (same settings and seeds for both sets; the
    adapters under ``output_dir/{clean,protected}/``). Defaults: the family's; sampling at the
    training resolution."""
    settings = settings or default_settings(mimic.family)["lora"]
    sampling = sampling or sample_settings(mimic.family, resolution=settings.resolution)
    if mimic.family == "sd-1.5":
        from .lora import lora_duel

        return lora_duel(mimic.trainer, clean_images, protected_images, output_dir, settings, sampling, progress=progress)
    from .flux2_lora import flux2_lora_duel

    return flux2_lora_duel(mimic.trainer, mimic.sampler, clean_images, protected_images, output_dir, settings, sampling, progress=progress)
