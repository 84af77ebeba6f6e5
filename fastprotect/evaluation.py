"""The one evaluation harness: how protected images are scored, shared by ``python -m train.evaluate``
and the benchmarks (``benchmarks/efficacy.py``: ``ablate_speed.py``, ``latency.py --measure-match``).

Definitions (every image B×3×H×W in [0, 1]; x clean, x̂ protected, E / D the autoencoder's encoder /
decoder, y_t the image's target pattern resized to H×W, bilinear with antialiasing):

* invisibility of x̂ vs x: ``lpips`` (the perceptual distance given, LPIPS v0.1 AlexNet in the
  reports), ``lpips_vgg`` (only when a VGG perceptual is given), ``psnr`` (dB, data range 1),
  ``ssim`` (``fastprotect.metrics.ssim``), ``linf`` (largest change in 8-bit levels); with
  ``extended=True`` also ``flat_ratio`` (:func:`flat_region_energy_ratio`);
* efficacy: ``pull`` = ‖E(x̂) − E(y_t)‖ / ‖E(x) − E(y_t)‖ (1 = no pull, lower is stronger) and
  ``damage`` = LPIPS(D(E(x̂)), x) − LPIPS(D(E(x)), x), the mimic damage (how much farther from x the
  fine-tuner's view of x̂ is than its view of x; higher is stronger; target-independent);
* robustness: ``TRANSFORMS`` / :func:`transform` (JPEG q90 / q75, resize to half and back, Gaussian
  noise σ = 4/255), applied to x̂ *and* x (same noise) so only the protection's survival is measured;
* :func:`summarise`: means per domain and over all images;
* controls for visibility studies: :func:`matched_noise` (random noise of the protection's energy).

:class:`Harness` encodes the clean images and the target latents once (:meth:`Harness.reference`),
then :meth:`Harness.measure` gives per-image tensors. Networks run in chunks of ``chunk`` images (4)
under ``torch.no_grad``. Importing this module loads torch but no network, LPIPS, PIL codec or
scikit-learn; the library's serving path (``fastprotect.protect``) never imports it.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastprotect import metrics
from fastprotect.metrics import CONTRAST_WINDOW, LUMA_WEIGHTS, local_contrast  # noqa: F401  (re-exported: the measures' vocabulary)

# ---------------------------------------------------------------------------- robustness transforms
# jpegQ: JPEG at quality Q (Pillow, 4:2:0); resize-half: bilinear (antialiased) to half size and back;
# noise4: additive Gaussian noise of σ = 4/255, clipped to [0, 1].
TRANSFORMS = ("jpeg90", "jpeg75", "resize-half", "noise4")


def transform(images: torch.Tensor, name: str, generator: torch.Generator) -> torch.Tensor:
    """One of ``TRANSFORMS`` applied to B×3×H×W in [0, 1]; ``generator`` draws the noise of ``noise4``."""
    if name.startswith("jpeg"):
        return _jpeg(images, int(name[4:]))
    if name == "resize-half":
        h, w = images.shape[-2:]
        small = F.interpolate(images, size=(h // 2, w // 2), mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    if name == "noise4":
        return (images + torch.randn(images.shape, generator=generator).to(images.device) * 4 / 255).clamp(0, 1)
    raise ValueError(f"unknown transform {name!r}; expected one of {TRANSFORMS}")


def _jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image as an 8-bit JPEG at ``quality`` and decode it again."""
    from PIL import Image  # lazy: only robustness runs need the codec

    out = []
    for image in images:
        array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).contiguous().numpy()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        decoded = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        out.append(torch.frombuffer(bytearray(decoded.tobytes()), dtype=torch.uint8).reshape(array.shape).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


# -------------------------------------------------------------------------------- per-image measures
def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, data range 1) of each image pair: B, float64 (inf where identical)."""
    return torch.tensor([metrics.psnr(p[None], q[None]) for p, q in zip(a, b, strict=True)], dtype=torch.float64)


def flat_region_energy_ratio(clean: torch.Tensor, protected: torch.Tensor, window: int = CONTRAST_WINDOW) -> torch.Tensor:
    """Flat-region energy ratio per image: B.

    = RMS of the perturbation δ = protected − clean over the pixels whose local contrast
    (:func:`local_contrast` of the *clean* image: std of BT.601 luminance in a 7×7 window) is in the
    lowest third ÷ its RMS over the pixels in the highest third. The thirds are by rank: the
    ⌊n/3⌋ pixels of lowest and of highest contrast (ties broken by pixel position), so each third
    has the same size even on images with large flat areas; the RMS runs over the three channels of
    those pixels. 1 = the energy is spread evenly over flat and textured regions; below 1 = it sits
    in texture, where it is less visible; above 1 = it sits in flat regions, where it shows. NaN
    where the highest third carries no perturbation at all.
    """
    contrast = local_contrast(clean, window).flatten(1)
    energy = (protected.float() - clean.float()).pow(2).sum(1).flatten(1)  # per pixel, summed over channels
    third = contrast.shape[1] // 3
    if third == 0:
        raise ValueError("flat_region_energy_ratio needs at least 3 pixels")
    order = contrast.argsort(dim=1, stable=True)
    low = energy.gather(1, order[:, :third]).mean(1)
    high = energy.gather(1, order[:, -third:]).mean(1)
    ratio = (low / high).sqrt()
    return torch.where(high > 0, ratio, torch.full_like(ratio, float("nan")))


def matched_noise(clean: torch.Tensor, protected: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random noise with the energy (so the PSNR) of ``protected`` − ``clean``, per image: the control
    a protection must beat ("is it better than noise that costs as much?").

    It is what adding noise and saving the image does: every value moves by a random sign times a
    magnitude, and the result is clipped to [0, 255]. The signs never depend on the image: flipping
    them at saturated pixels (as a first version did) turned the noise into a uniform shift over
    white or black areas — nearly invisible to an encoder — and so underrated noise on cartoons and
    skies by up to 40× (measured on held-out cartoons). Magnitudes are ⌊r + u⌋ levels with u ~ U[0, 1)
    fixed per value (mean r); r is found by bisection so that the energy *after clipping* equals the
    protection's, Σδ² in levels², to within one value's step, i.e. the PSNR matches to about 0.01 dB.
    Where clipping removes much energy, r (and so the largest move) can exceed the protection's L∞:
    equal energy is the criterion, not equal L∞. Returns B×3×H×W in [0, 1] on the 8-bit grid;
    ``generator`` (CPU) draws u and the signs.
    """
    clean_levels = (clean.float() * 255).round().cpu()
    delta = (protected.float() * 255).round().cpu() - clean_levels
    out = []
    for x, d in zip(clean_levels, delta, strict=True):
        target = float(d.pow(2).sum())
        u = torch.rand(x.shape, generator=generator)
        sign = torch.randint(0, 2, x.shape, generator=generator).float() * 2 - 1
        if target == 0:
            out.append(x)
            continue

        def noisy(r: float) -> torch.Tensor:
            return (x + sign * torch.floor(r + u)).clamp(0, 255)

        def energy(r: float) -> float:
            return float((noisy(r) - x).pow(2).sum())

        low, high = 0.0, math.sqrt(target / x.numel())
        while energy(high) < target and high < 255:
            high *= 2
        for _ in range(40):  # energy is non-decreasing in r: each value's move only grows
            middle = (low + high) / 2
            low, high = (middle, high) if energy(middle) < target else (low, middle)
        best = min((low, high), key=lambda r: abs(energy(r) - target))
        out.append(noisy(best))
    return (torch.stack(out) / 255).to(clean.device)


# ------------------------------------------------------------------------------------------- harness
@dataclass(frozen=True)
class Reference:
    """Clean images and what the autoencoder makes of them (computed once by :meth:`Harness.reference`)."""

    images: torch.Tensor  # B×3×H×W, on the harness's device
    latent: torch.Tensor  # E(x)
    round_trip: torch.Tensor  # D(E(x)), cropped to H×W
    round_trip_lpips: torch.Tensor  # LPIPS(D(E(x)), x) per image: the baseline of the mimic damage


class Harness:
    """Scores protected images against ``autoencoder`` (encoder + decoder) and ``perceptual`` (LPIPS).

    ``target_images``: T×3×S×S in [0, 1], the mixture's target patterns (``target_images_float()``);
    ``targets`` arguments index them. ``perceptual_vgg``: a second LPIPS (VGG trunk) reported as
    ``lpips_vgg``. ``extended``: also the flat-region energy ratio.
    """

    def __init__(self, autoencoder, perceptual, target_images: torch.Tensor, *, device: str | torch.device = "cpu",
                 perceptual_vgg=None, extended: bool = False, chunk: int = 4) -> None:
        if autoencoder.decoder is None:
            raise ValueError("the evaluation needs the autoencoder's decoder (load it with with_decoder=True)")
        self.encoder, self.decoder = autoencoder.encoder, autoencoder.decoder
        self.perceptual, self.perceptual_vgg = perceptual, perceptual_vgg
        self.device = torch.device(device)
        self.target_images = target_images.to(self.device)
        self.extended = extended
        self.chunk = chunk
        self._target_latents: dict[tuple[int, int], torch.Tensor] = {}
        self._references: dict[str, Reference] = {}

    # ------------------------------------------------------------------------ networks
    @torch.no_grad()
    def target_latents(self, height: int, width: int) -> torch.Tensor:
        """E(y_t) of every target pattern resized to ``height``×``width``: T×C×h×w (cached per size)."""
        key = (int(height), int(width))
        if key not in self._target_latents:
            resized = F.interpolate(self.target_images, size=key, mode="bilinear", align_corners=False, antialias=True)
            self._target_latents[key] = self.encoder.encode(resized)
        return self._target_latents[key]

    @torch.no_grad()
    def round_trip(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E(x), D(E(x))) with the decoded images cropped to the input's H×W, as float."""
        images = images.to(self.device)
        latents, decoded = [], []
        for part in images.split(self.chunk):
            z = self.encoder.encode(part)
            latents.append(z)
            decoded.append(self.decoder(z)[..., : part.shape[-2], : part.shape[-1]].float())
        return torch.cat(latents), torch.cat(decoded)

    @torch.no_grad()
    def lpips(self, a: torch.Tensor, b: torch.Tensor, perceptual=None) -> torch.Tensor:
        """Perceptual distance per image (``perceptual`` default: the harness's LPIPS): B."""
        perceptual = perceptual or self.perceptual
        a, b = a.to(self.device), b.to(self.device)
        return torch.cat([perceptual(p, q) for p, q in zip(a.split(self.chunk), b.split(self.chunk), strict=True)]).flatten()

    # ------------------------------------------------------------------------ references
    def reference(self, clean: torch.Tensor | Reference) -> Reference:
        """The clean images' latents, round trips and round-trip LPIPS, computed once per content."""
        if isinstance(clean, Reference):
            return clean
        clean = clean.to(self.device)
        digest = hashlib.sha1(clean.detach().cpu().contiguous().numpy().tobytes())
        digest.update(repr((tuple(clean.shape), str(clean.dtype))).encode())
        key = digest.hexdigest()
        if key not in self._references:
            latent, round_trip = self.round_trip(clean)
            self._references[key] = Reference(clean, latent, round_trip, self.lpips(round_trip, clean))
        return self._references[key]

    # ------------------------------------------------------------------------ measures
    @torch.no_grad()
    def efficacy(self, clean: torch.Tensor | Reference, protected: torch.Tensor, targets: torch.Tensor,
                 *, seen_clean: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per image: ``pull`` and ``damage`` (module docstring).

        ``seen_clean``: what the mimic sees of the clean image when ``protected`` was transformed
        (robustness): pull is then relative to E(seen_clean) and damage to D(E(seen_clean)), both
        still measured against the original clean image.
        """
        ref = self.reference(clean)
        if seen_clean is None:
            clean_latent, baseline = ref.latent, ref.round_trip_lpips
        else:
            clean_latent, clean_rt = self.round_trip(seen_clean)
            baseline = self.lpips(clean_rt, ref.images)
        latent, round_trip = self.round_trip(protected)
        targets = torch.as_tensor(targets, device=self.device).long()
        target_latents = self.target_latents(*ref.images.shape[-2:])[targets]
        return {"pull": metrics.latent_pull(clean_latent, latent, target_latents),
                "damage": self.lpips(round_trip, ref.images) - baseline}

    @torch.no_grad()
    def invisibility(self, clean: torch.Tensor | Reference, protected: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per image: ``lpips``, ``psnr``, ``ssim``, ``linf`` (+ ``lpips_vgg``, ``flat_ratio`` when configured)."""
        x = self.reference(clean).images if isinstance(clean, Reference) else clean.to(self.device)
        protected = protected.to(self.device)
        out = {
            "lpips": self.lpips(protected, x),
            "psnr": psnr_per_image(protected, x),
            "ssim": torch.tensor([metrics.ssim(p[None], c[None]) for p, c in zip(protected, x, strict=True)]),
            "linf": torch.tensor([float(metrics.linf_levels(p[None], c[None])) for p, c in zip(protected, x, strict=True)]),
        }
        if self.perceptual_vgg is not None:
            out["lpips_vgg"] = self.lpips(protected, x, self.perceptual_vgg)
        if self.extended:
            out["flat_ratio"] = flat_region_energy_ratio(x, protected)
        return out

    def measure(self, clean: torch.Tensor | Reference, protected: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Invisibility and efficacy of ``protected`` (B×3×H×W) against ``clean``, per image: name -> B."""
        ref = self.reference(clean)
        return self.invisibility(ref, protected) | self.efficacy(ref, protected, targets)


def summarise(per_image: dict[str, torch.Tensor], domains: list[str]) -> dict[str, dict[str, float]]:
    """Mean of every per-image measure per domain and over all images (key ``"all"``)."""
    out: dict[str, dict[str, float]] = {}
    for domain in sorted(set(domains)) + ["all"]:
        mask = torch.tensor([d == domain or domain == "all" for d in domains])
        out[domain] = {key: float(value.cpu()[mask].float().mean()) for key, value in per_image.items() if value.numel() == len(domains)}
    return out
