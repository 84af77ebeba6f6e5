"""Protector: the inference pipeline. One public entry point, :meth:`Protector.protect`.

Pre-trained mode, generator checkpoint (the default, :mod:`fastprotect.generator`), no optimisation:
  1. δ = generator(x) on a copy whose long side ≤ its ``work_size``, upsampled: the texture budget
     and the energy cap are part of the generator, so there is no separate strength step.
  2. project to the caller's L∞ budget η, quantise to 8 bits (steps 4–5 below).
Pre-trained mode, mixture checkpoint (the paper's method, selectable), no optimisation:
  1. z = E(x resized to assign_size²); k = nearest K-means centroid; t = entropy-closest target
     (or the target the caller forces).
  2. δ = bilinear resize(δ_g^t + Δ_k^t, H×W) · η / η_train: any size, any aspect ratio.
  3. M = spatial LPIPS(x, x + δ) on a reduced copy, upsampled; δ ← S(1 − M)·δ (strength.py).
  4. project to the caller's L∞ budget η, then quantise to 8 bits with the budget still holding.
  5. optional refine: N PGD steps on the multi-layer loss, starting from step 4.
Per-image mode (no mixture available): PGD from a seeded random start, the slower path.
PGD runs on a working copy whose long side is at most ``work_size`` and its change is upsampled,
so that its cost does not grow with the photo's resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from . import metrics
from . import environment, sources
from .encoders import Autoencoder, load_autoencoder
from .images import LoadedImage, fit_within, is_levels, levels_to_pixels, load_image, pixel_rows, pixels_to_levels, resize_image, resize_tensor
from .losses import encode_target
from .pgd import pgd_perturb
from .strength import adaptive_scale, compose_, project_linf
from .targets import entropy_signature, target_patterns
from .timing import StageTimer
from .vocabulary import DEFAULT_ETA, TARGET_NAMES, AutoencoderKind, TargetChoice, check_eta, check_refine_steps, check_target, levels_from_eta

if TYPE_CHECKING:
    from .generator import PerturbationGenerator
    from .mixture import MixtureOfPerturbations
    from .perceptual import PerceptualDistance

ProtectionMode = Literal["pretrained", "per-image"]
ProtectionMethod = Literal["generator", "mixture", "per-image"]
ProgressCallback = Callable[[float, str], None]



@dataclass
class ProtectionInfo:
    """What happened to one image; every number is also what the UI shows."""

    mode: ProtectionMode
    method: ProtectionMethod  # generator / mixture (both "pretrained" mode) or per-image PGD
    target: str
    group: int | None
    eta_levels: int  # budget in 8-bit levels (8 for eta = 8/255)
    linf_levels: int  # measured largest change, 8-bit levels (≤ eta_levels always)
    psnr_db: float
    ssim: float
    lpips: float | None  # LPIPS (clean, protected), measured on a copy whose long side ≤ metrics_size
    adaptive_strength: bool
    refine_steps: int  # PGD steps run after the pre-trained step (0 in per-image mode)
    per_image_steps: int  # PGD steps of the per-image fallback (0 in pre-trained mode)
    width: int
    height: int
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProtectionResult:
    # 1×3×H×W in [0, 1] on the 8-bit grid: the protected image; its uint8 levels (0–255) when the input was levels
    image: torch.Tensor
    original: torch.Tensor = field(repr=False)  # 1×3×H×W: the clean input it was made from (float or levels, as given)
    lpips_map: torch.Tensor | None  # 1×1×H×W visibility map used by adaptive strength (None when off)
    info: ProtectionInfo
    # 1×1×H×W texture budget of the generator in [0, 1] (None otherwise, or when the caller did not keep it)
    budget_map: torch.Tensor | None = None

    @property
    def perturbation(self) -> torch.Tensor:
        """image − original, 1×3×H×W float, within ±eta: made when asked (a full-size copy the CLI never needs)."""
        return self.sampled_perturbation(1)

    def sampled_perturbation(self, stride: int) -> torch.Tensor:
        """:attr:`perturbation` at every ``stride``-th pixel of every ``stride``-th row: only those pixels are read
        (a picture of δ for a large image without its full-size float copy)."""
        image, original = self.image[..., ::stride, ::stride], self.original[..., ::stride, ::stride]
        if is_levels(image):
            return (image.float() - original.float()).div_(255)
        return image - original


class Protector:
    """Protects images with a pre-trained generator or mixture (fast) or per-image PGD (slow).

    Build with :meth:`from_pretrained`, or directly from already loaded parts (tests pass tiny
    models). Models are put in eval mode on ``device``; nothing is moved to a GPU implicitly.
    """

    def __init__(
        self,
        autoencoder: Autoencoder,
        *,
        mixture: MixtureOfPerturbations | None = None,
        generator: PerturbationGenerator | None = None,
        perceptual: "PerceptualDistance | None" = None,
        device: str | torch.device = "cpu",
        assign_size: int | None = None,
        map_size: int = 256,
        metrics_size: int = 1024,
        work_size: int = 512,
        per_image_steps: int = 50,
        notes: list[str] | None = None,
        timer: StageTimer | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.autoencoder = autoencoder
        self.encoder = autoencoder.encoder.to(self.device).eval()
        if mixture is not None and generator is not None:
            raise ValueError("pass a mixture or a generator, not both")
        self.mixture = mixture.to(self.device).eval() if mixture is not None else None
        # channels-last: the generator's full-resolution convolutions run ≈ 30 % faster on CPU (0.56 → 0.39 s at 512²)
        self.generator = generator.to(self.device, memory_format=torch.channels_last).eval() if generator is not None else None
        self.perceptual = perceptual.to(self.device).eval() if perceptual is not None else None
        self.assign_size = assign_size or (mixture.config.assign_size if mixture is not None else 256)
        self.map_size, self.metrics_size, self.work_size = map_size, metrics_size, work_size
        self.per_image_steps = per_image_steps
        self.notes = list(notes or [])
        self.sources: dict[str, str] = {}  # where each weight came from, for the About page and logs
        self.timer = timer or StageTimer()  # benchmarks pass StageTimer.for_device(...) on a GPU
        self._target_images = (mixture.target_images_float() if mixture is not None else target_patterns(512)).to(self.device)
        self._target_signatures: torch.Tensor | None = None

    @property
    def mode(self) -> ProtectionMode:
        return "per-image" if self.method == "per-image" else "pretrained"

    @property
    def method(self) -> ProtectionMethod:
        return "generator" if self.generator is not None else "mixture" if self.mixture is not None else "per-image"

    @property
    def checkpoint_config(self):
        """The loaded checkpoint's config (GeneratorConfig or MixtureConfig), None in per-image mode."""
        model = self.generator or self.mixture
        return model.config if model is not None else None

    @property
    def target_images(self) -> torch.Tensor:
        """The three target patterns (T×3×S×S, [0, 1]) in ``TARGET_NAMES`` order, for display."""
        return self._target_images

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path | None = None,
        *,
        per_image: bool = False,
        encoder_kind: AutoencoderKind | None = None,
        encoder_source: str | Path | None = None,
        lpips_backbone: str | Path | None = None,
        lpips_net: Literal["alex", "vgg"] = "alex",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        min_energy: float | None = None,
        with_lpips: bool | None = True,
        **options,
    ) -> "Protector":
        """Load the mixture, the encoder it was trained against, and LPIPS.

        ``checkpoint``: a folder or Hub id; None means FASTPROTECT_CHECKPOINT, else the bundled one.
        Its ``config.json`` says which method it holds (a generator's has ``"method": "generator"``).
        ``per_image=True`` loads no mixture and runs per-image PGD on ``encoder_kind`` (default
        FASTPROTECT_ENCODER_KIND, else TAEF2). Every weight is found by :mod:`fastprotect.sources`
        (argument → environment → the checkpoint's bundle → Hub), so the bundled checkpoint works
        offline with no variable set. A checkpoint or encoder that cannot be loaded raises
        (``WeightsUnavailableError`` / ``CheckpointError``) naming what failed; there is no silent
        fallback to another mode. ``dtype``: float16 halves memory and time on a GPU.
        ``min_energy`` (generator checkpoints only): the minimum energy, in RMS levels at η 8, below
        which an image's texture-budget floor is raised (``GeneratorConfig.fill_rms_levels``; 0 = off,
        None = the checkpoint's) and its δ written in the checkpoint's ``fill_form`` (blue-yellow only by default):
        flat-colour images get protection, with a faint colour pattern on their flat areas (docs/EVALUATION.md). A ValueError when out of range or for another method.
        ``with_lpips``: load LPIPS (True); None: only where the method uses it to protect (the mixture's and per-image
        mode's adaptive strength), so that a generator protector's results carry no LPIPS value (``info.lpips`` None)
        and the process never imports lpips and torchvision (≈ 180 MB of resident memory, seconds of start-up).
        """
        mixture, generator, bundle = None, None, None
        if not per_image:
            where = sources.checkpoint_source(checkpoint)
            if sources.checkpoint_method(where.location) == "generator":
                from .generator import PerturbationGenerator

                generator = PerturbationGenerator.from_pretrained(where.location)
                if min_energy is not None:  # this protector's own default: the same weights under that config
                    generator = generator.with_config(fill_rms_levels=generator.check_min_energy(min_energy))
                model = generator
            else:
                from .mixture import MixtureOfPerturbations  # lazy: huggingface_hub costs a quarter second to import

                mixture = MixtureOfPerturbations.from_pretrained(where.location)
                model = mixture
            if min_energy is not None and generator is None:
                raise ValueError("min_energy applies to a generator checkpoint only (this one is a mixture)")
            bundle = sources.local_folder(where.location)
            kind = model.config.encoder_kind
            hub_default = (model.config.encoder_source, model.config.encoder_subfolder)
        else:
            if min_energy is not None:
                raise ValueError("min_energy applies to a generator checkpoint only, not to per-image mode")
            kind = encoder_kind or environment.get("FASTPROTECT_ENCODER_KIND") or "taef2"
            bundle = sources.local_folder(sources.checkpoint_source().location)  # its encoder, if the same kind
            hub_default = None
        source = sources.encoder_source(kind, argument=encoder_source, bundle=bundle, hub_default=hub_default)
        autoencoder = load_autoencoder(kind, source.location, subfolder=source.subfolder, with_decoder=True, device=device, dtype=dtype)
        protector_sources = {"encoder": source.describe()}
        perceptual = None
        if with_lpips or (with_lpips is None and generator is None):
            from .perceptual import load_perceptual  # lazy: lpips pulls torchvision

            backbone = sources.lpips_source(argument=lpips_backbone, bundle=bundle if lpips_net == "alex" else None)
            perceptual = load_perceptual(lpips_net, None if backbone.origin == "download" else backbone.location, device=device)
            protector_sources["lpips"] = backbone.describe()
        protector = cls(autoencoder, mixture=mixture, generator=generator, perceptual=perceptual, device=device, **options)
        protector.sources = protector_sources
        return protector

    # ----------------------------------------------------------------------------- protect
    @torch.inference_mode(False)
    def protect(
        self,
        image: torch.Tensor | LoadedImage | str | Path,
        *,
        eta: float = DEFAULT_ETA,
        target: TargetChoice = "auto",
        adaptive_strength: bool = True,
        refine_steps: int = 0,
        seed: int = 0,
        compute_metrics: bool = True,
        progress: ProgressCallback | None = None,
        min_energy: float | None = None,
        keep_budget_map: bool = True,
    ) -> ProtectionResult:
        """Protect one image. ``image``: 1×3×H×W in [0, 1] on the 8-bit grid, a LoadedImage or a path.
        Given as 8-bit levels (uint8, e.g. ``load_image(..., levels=True)``), the result's image is levels too and the
        generator reads the clean image band by band: no full-size float copy of it is ever made (the other methods
        convert it first). ``keep_budget_map=False``: the result's ``budget_map`` is None (a full-size float map,
        160 MB at 40 MP, that a caller who never shows it need not hold).

        ``eta``: L∞ budget in [0, 1] units (DEFAULT_ETA = 8/255; at most MAX_ETA, see
        :mod:`fastprotect.vocabulary`). ``target``: a pattern name or "auto" (entropy selection).
        ``refine_steps``: extra PGD steps after the pre-trained step, 0…MAX_REFINE_STEPS (per-image
        mode runs its own ``per_image_steps`` instead). ``min_energy``: this call's minimum energy
        (generator only; see :meth:`from_pretrained`; None = the loaded generator's own, 0 = off).
        Same input and seed, same output.

        Like a diffusers pipeline's ``__call__``: check the arguments, run the method's own step
        (:meth:`_generator_step`, :meth:`_mixture_step`, :meth:`_per_image_step`: each gives δ within ±η),
        then the shared tail (:meth:`_finish`: optional refinement, 8-bit composition, the report).
        """
        eta, target, refine_steps = check_eta(eta), check_target(target), check_refine_steps(refine_steps)
        if min_energy is not None and self.generator is None:  # its value is checked by the generator it goes to
            raise ValueError(f"min_energy applies to the generator method only; this protector runs the {self.method}")
        x = self._as_tensor(image)
        run = _Run(report=progress or (lambda fraction, stage: None), timings={},
                   notes=[*self.notes, *(image.notes if isinstance(image, LoadedImage) else [])],
                   generator=torch.Generator(device="cpu").manual_seed(seed))
        levels = is_levels(x)
        if levels and (self.method != "generator" or refine_steps):  # only the generator's banded path reads levels
            result = self.protect(levels_to_pixels(x), eta=eta, target=target, adaptive_strength=adaptive_strength,
                                  refine_steps=refine_steps, seed=seed, compute_metrics=compute_metrics, progress=progress,
                                  min_energy=min_energy, keep_budget_map=keep_budget_map)
            result.info.notes = [*run.notes, *result.info.notes[len(self.notes):]]  # with the LoadedImage's notes
            result.image, result.original = pixels_to_levels(result.image), x
            return result
        if self.method == "generator":
            step = self._generator_step(x, eta, target, min_energy, refine_steps, run, keep_budget_map)
        elif self.method == "mixture":
            step = self._mixture_step(x, eta, target, adaptive_strength, run)
        else:
            step = self._per_image_step(x, eta, target, adaptive_strength, run)
        return self._finish(x, step, eta, refine_steps, compute_metrics, run)

    def _generator_step(self, x: torch.Tensor, eta: float, target: TargetChoice, min_energy: float | None, refine_steps: int,
                        run: _Run, keep_budget_map: bool = True) -> _Step:
        """The generator's δ and its budget map. No encoder runs: the target is the one it was trained towards.
        Its texture budget and energy cap replace the LPIPS-driven adaptive strength, which only re-weights the
        mixture's fixed patterns (issue 10: measured there). Without refinement the generator composes the
        protected image itself, band by band (:meth:`PerturbationGenerator.protect_image`: the same image in a
        fraction of the time and memory); refinement starts from its δ."""
        target_index = TARGET_NAMES.index(self.generator.config.target if target == "auto" else target)
        run.report(0.25, "perturbation")
        if not refine_steps:
            with torch.no_grad():
                with self.timer(run.timings, "network"):  # on a copy of bounded size
                    pattern = self.generator.small_pattern(x)
                with self.timer(run.timings, "generate"):  # at full resolution: budget, upsampling, cap, composition
                    protected, budget_map = self.generator.protect_image(x, eta, min_energy=min_energy, pattern=pattern,
                                                                         levels=is_levels(x), keep_budget=keep_budget_map)
            return _Step(delta=None, target_index=target_index, budget_map=budget_map, protected=protected)
        with torch.no_grad(), self.timer(run.timings, "generate"):
            delta, budget_map = self._generate(self.generator, x, eta, min_energy)
        return _Step(delta=project_linf(delta, eta), target_index=target_index, budget_map=budget_map if keep_budget_map else None)

    def _mixture_step(self, x: torch.Tensor, eta: float, target: TargetChoice, adaptive_strength: bool, run: _Run) -> _Step:
        """The paper's method: assign x to a group, pick a target, resize that pattern to x's size and scale it to
        η; then the adaptive strength."""
        with torch.no_grad():
            latent = self._assign_latent(x, run)
            with self.timer(run.timings, "select"):
                target_index = self._select_target(latent, target)
                group = int(self.mixture.assign(latent)[0])
            run.report(0.25, "perturbation")
            with self.timer(run.timings, "resize"):
                base = self.mixture.perturbation(torch.tensor([target_index], device=self.device), torch.tensor([group], device=self.device))
                delta = resize_tensor(base, *x.shape[-2:]) * (eta / self.mixture.config.eta)
        delta, lpips_map = self._adaptive_strength(x, project_linf(delta, eta), eta, adaptive_strength, run)
        return _Step(delta=delta, target_index=target_index, group=group, lpips_map=lpips_map)

    def _per_image_step(self, x: torch.Tensor, eta: float, target: TargetChoice, adaptive_strength: bool, run: _Run) -> _Step:
        """No pre-trained model: PGD on the encoder from a seeded random start, then the adaptive strength."""
        with torch.no_grad():
            latent = self._assign_latent(x, run)
            with self.timer(run.timings, "select"):
                target_index = self._select_target(latent, target)
        run.report(0.3, f"per-image PGD ({self.per_image_steps} steps)")
        with self.timer(run.timings, "pgd"):
            delta = self._pgd(x, torch.zeros_like(x), target_index, eta, self.per_image_steps, run.generator, run.report, refine=False)
        delta, lpips_map = self._adaptive_strength(x, project_linf(delta, eta), eta, adaptive_strength, run)
        return _Step(delta=delta, target_index=target_index, lpips_map=lpips_map)

    def _finish(self, x: torch.Tensor, step: _Step, eta: float, refine_steps: int, compute_metrics: bool, run: _Run) -> ProtectionResult:
        """The shared tail: optional PGD refinement (pre-trained methods), 8-bit composition within η, the report."""
        _, _, height, width = x.shape
        delta = step.delta
        if self.mode == "per-image" and refine_steps:
            run.notes.append("Refine steps apply to the pre-trained mode only; per-image mode ran its own PGD steps.")
        if self.mode == "pretrained" and refine_steps:  # the paper's Fig. 7c: PGD from the pre-trained step
            run.report(0.75, f"refine ({refine_steps} PGD steps)")
            with self.timer(run.timings, "refine"):
                delta = self._pgd(x, delta, step.target_index, eta, refine_steps, run.generator, run.report, refine=True)
        with torch.no_grad():
            protected = step.protected
            if protected is None:
                with self.timer(run.timings, "compose"):  # δ is this call's own: the image is written over it
                    protected = compose_(x, delta.clamp_(-eta, eta), eta)
            run.report(0.9, "metrics")
            info = ProtectionInfo(
                mode=self.mode, method=self.method, target=TARGET_NAMES[step.target_index], group=step.group,
                eta_levels=levels_from_eta(eta), linf_levels=_linf_levels(protected, x),
                psnr_db=float("nan"), ssim=float("nan"), lpips=None,
                adaptive_strength=step.lpips_map is not None,
                refine_steps=refine_steps if self.mode == "pretrained" else 0,
                per_image_steps=self.per_image_steps if self.mode == "per-image" else 0,
                width=width, height=height, timings_s=run.timings, notes=run.notes,
            )
            if compute_metrics:
                with self.timer(run.timings, "metrics"):
                    self._fill_metrics(info, x, protected)
        run.timings["total"] = sum(value for key, value in run.timings.items() if key != "metrics")
        run.report(1.0, "done")
        return ProtectionResult(image=protected, original=x, lpips_map=step.lpips_map, info=info, budget_map=step.budget_map)

    # ----------------------------------------------------------------------------- helpers
    def _as_tensor(self, image: torch.Tensor | LoadedImage | str | Path) -> torch.Tensor:
        """The image as 1×3×H×W float32 on the device, or as uint8 levels (kept: read band by band)."""
        if isinstance(image, (str, Path)):
            image = load_image(image)
        pixels = image.pixels if isinstance(image, LoadedImage) else image
        if pixels.ndim != 4 or pixels.shape[:2] != (1, 3):
            raise ValueError(f"expected a 1×3×H×W image tensor, got shape {tuple(pixels.shape)}")
        return pixels.to(self.device) if is_levels(pixels) else pixels.to(self.device, torch.float32)

    def _assign_latent(self, x: torch.Tensor, run: _Run) -> torch.Tensor:
        """The encoder's latent of x resized to assign_size² (the mixture's group and the entropy target)."""
        run.report(0.05, "assignment")
        with self.timer(run.timings, "assign"):
            return self.encoder.encode(resize_tensor(x, self.assign_size, self.assign_size))

    def _adaptive_strength(self, x: torch.Tensor, delta: torch.Tensor, eta: float, enabled: bool, run: _Run) -> tuple[torch.Tensor, torch.Tensor | None]:
        """δ ← S(1 − M)·δ within ±η (strength.py) and the map M, when asked and LPIPS is loaded; δ and None otherwise."""
        if not enabled:
            return delta, None
        if self.perceptual is None:
            run.notes.append("Adaptive strength skipped: no LPIPS model loaded.")
            return delta, None
        run.report(0.7, "adaptive strength")
        with torch.no_grad(), self.timer(run.timings, "lpips_map"):
            lpips_map = self._visibility_map(x, delta)
            return project_linf(delta * adaptive_scale(lpips_map), eta), lpips_map

    def _select_target(self, latent: torch.Tensor, target: TargetChoice) -> int:
        if target != "auto":
            return TARGET_NAMES.index(target)
        if self.mixture is not None:
            return int(self.mixture.select_target(latent)[0])
        if self._target_signatures is None:  # per-image mode: signatures of the patterns themselves
            patterns = resize_tensor(self._target_images, self.assign_size, self.assign_size)
            self._target_signatures = entropy_signature(self.encoder.encode(patterns))
        distances = torch.cdist(entropy_signature(latent), self._target_signatures, p=1)
        return int(distances.argmin(dim=1)[0])

    def _pgd(self, x, delta, target_index, eta, steps, generator, report, *, refine: bool) -> torch.Tensor:
        """PGD on a working copy (long side ≤ work_size); its change is upsampled onto δ.

        ``refine``: start from δ with small steps; otherwise a seeded random start (per-image mode).
        """
        height, width = x.shape[-2:]
        work_h, work_w = fit_within(height, width, self.work_size, min_side=8)
        x_work, start = resize_tensor(x, work_h, work_w), resize_tensor(delta, work_h, work_w)
        target = encode_target(self.encoder, self._target_images[target_index : target_index + 1], work_h, work_w)
        first, span = (0.75, 0.13) if refine else (0.3, 0.4)
        result = pgd_perturb(
            self.encoder, x_work, target, eta=eta, steps=steps,
            init=start if refine else None, random_start=not refine, generator=generator,
            progress=lambda step, total: report(first + span * step / total, f"PGD step {step}/{total}"),
        )
        if (work_h, work_w) == (height, width):
            return result
        return delta + resize_tensor(result - start, height, width)

    @staticmethod
    def _generate(model: PerturbationGenerator, x: torch.Tensor, eta: float, min_energy: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator's δ for x (1×3×H×W) and its full-size budget map: the network runs on a small
        copy (``PerturbationGenerator.network_size``: cost bounded whatever the photo's size), its raw
        pattern is upsampled, then the budget map and energy cap are applied at full resolution."""
        return model.perturbation_and_budget(x, eta, raw=model.raw(x), min_energy=min_energy)

    def _visibility_map(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Spatial LPIPS of (x, x + δ) on a copy whose long side ≤ map_size, upsampled to H×W."""
        h, w = fit_within(*x.shape[-2:], self.map_size, min_side=_LPIPS_MIN_SIDE)
        small_map = self.perceptual.spatial_map(resize_tensor(x, h, w), resize_tensor((x + delta).clamp(0, 1), h, w))
        return resize_tensor(small_map, *x.shape[-2:])

    def _fill_metrics(self, info: ProtectionInfo, x: torch.Tensor, protected: torch.Tensor) -> None:
        """PSNR at full size (band by band), SSIM and LPIPS on copies whose long side ≤ metrics_size."""
        info.psnr_db = _psnr(protected, x)
        h, w = fit_within(*x.shape[-2:], self.metrics_size, min_side=_LPIPS_MIN_SIDE)
        # channels-last: PyTorch's grouped 11×11 convolution in SSIM then runs without its unfolded copy (+150 MB
        # instead of +320 MB at 1024 px, the same value)
        small_x, small_p = (resize_image(t, h, w).contiguous(memory_format=torch.channels_last) for t in (x, protected))
        info.ssim = metrics.ssim(small_p, small_x)
        if self.perceptual is not None:
            info.lpips = float(self.perceptual(small_p, small_x)[0])


@dataclass
class _Run:
    """One protect() call's bookkeeping, shared by the method steps and the tail."""

    report: ProgressCallback
    timings: dict[str, float]
    notes: list[str]
    generator: torch.Generator  # PGD's seeded random start


@dataclass
class _Step:
    """What a method's step hands to the shared tail: δ within ±η and what it decided on the way."""

    delta: torch.Tensor | None  # None when the step composed the protected image itself
    target_index: int
    group: int | None = None
    lpips_map: torch.Tensor | None = None
    budget_map: torch.Tensor | None = None
    protected: torch.Tensor | None = None


# LPIPS's AlexNet/VGG trunks pool five times: smaller inputs have no spatial extent left.
_LPIPS_MIN_SIDE = 64
_METRIC_BAND_ROWS = 256


def _linf_levels(a: torch.Tensor, b: torch.Tensor) -> int:
    """:func:`fastprotect.metrics.linf_levels` of images given as floats in [0, 1] or as 8-bit levels, band by band."""
    largest = 0.0
    for start in range(0, a.shape[-2], _METRIC_BAND_ROWS):
        stop = start + _METRIC_BAND_ROWS
        largest = max(largest, float((pixel_rows(a, start, stop) - pixel_rows(b, start, stop)).abs().max()))
    return int(round(largest * 255))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """:func:`fastprotect.metrics.psnr` (data range 1) band by band, the squared error summed in float64: two full-size
    float temporaries (0.9 GB at 40 MP) fewer; the same value to about 1e-6 dB."""
    total = 0.0
    for start in range(0, a.shape[-2], _METRIC_BAND_ROWS):
        stop = start + _METRIC_BAND_ROWS
        total += float((pixel_rows(a, start, stop) - pixel_rows(b, start, stop)).square_().sum(dtype=torch.float64))
    mse = total / a.numel()
    return float("inf") if mse == 0 else -10 * math.log10(mse)
