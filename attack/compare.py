"""Side-by-side pictures and numbers for a mimicry attack on clean vs protected images.

Grid (one row each, left to right one image per column)::

    clean inputs | protected inputs | clean-LoRA samples | protected-LoRA samples

Numbers, for a set of samples (all images centre-cropped and resized to ``METRIC_SIZE``²):

* ``nearest_training_lpips``: for each sample, LPIPS to the *closest clean training image*, then
  the mean. How well the mimic reproduced the subject/style: lower = closer. Protection works
  when the protected-LoRA value is clearly above the clean-LoRA value.
* ``pattern_ncc``: how much of a target pattern shows up. Grayscale, high-passed (the image minus
  a 9×9 box blur, so smooth content that every picture shares does not count), then the
  normalised cross-correlation with the high-passed pattern maximised over all circular shifts
  (the pattern can appear anywhere), in [-1, 1]; the highest over the targets given. Higher = more
  pattern. Compare with the same score of the clean training images (``reference``).
* ``pattern_lpips``: LPIPS to the closest target pattern (lower = more pattern-like).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from fastprotect.targets import target_pattern
from fastprotect.vocabulary import TARGET_NAMES

from .pipeline import center_square, module_device, stack_images

METRIC_SIZE = 256  # LPIPS is trained on 64² patches; 256² keeps detail and CPU cost low
BLUR = 9  # box size of the high-pass in pattern_ncc: removes structure coarser than ~1/28 of the image
ROW_TITLES = ("clean inputs", "protected inputs", "clean-LoRA samples", "protected-LoRA samples")


def target_images(size: int = METRIC_SIZE) -> dict[str, torch.Tensor]:
    """The library's three target patterns by name, each 1×3×size×size in [0, 1]."""
    return {name: target_pattern(name, size) for name in TARGET_NAMES}


def _square_batch(images: torch.Tensor | list[torch.Tensor], size: int) -> torch.Tensor:
    """Any images (a batch or a list of 1×3×H×W, [0, 1]) -> N×3×size×size (centre square)."""
    return torch.cat([center_square(image.float().cpu(), size) for image in stack_images(images)])


def to_pil(image: torch.Tensor) -> Image.Image:
    """One image (1×3×H×W or 3×H×W, [0, 1]) -> 8-bit RGB PIL image."""
    pixels = image.reshape(-1, *image.shape[-3:])[0].detach().float().cpu().clamp(0, 1)
    return Image.fromarray((pixels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())


def comparison_grid(
    groups: Sequence[tuple[str, torch.Tensor | list[torch.Tensor]]],
    *,
    tile: int = 128,
    labels: bool = True,
    orientation: Literal["rows", "columns"] = "rows",
) -> Image.Image:
    """A PIL RGB image of ``len(groups)`` × ``max images per group`` tiles, each ``tile``² pixels.

    ``groups`` is a list of (title, images in [0, 1]); each group fills one row (``orientation``
    "rows") or one column ("columns"), every image centre-cropped to a square tile, short groups
    padded with white. Titles are drawn inside the group's first tile, so the picture is exactly
    (groups × longest group) tiles.
    """
    if not groups:
        raise ValueError("nothing to draw")
    batches = [(title, _square_batch(images, tile)) for title, images in groups]
    longest = max(batch.shape[0] for _, batch in batches)
    across, down = (longest, len(batches)) if orientation == "rows" else (len(batches), longest)
    canvas = Image.new("RGB", (across * tile, down * tile), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for group, (title, batch) in enumerate(batches):
        for index, image in enumerate(batch):
            column, row = (index, group) if orientation == "rows" else (group, index)
            canvas.paste(to_pil(image), (column * tile, row * tile))
        if labels and title:
            x, y = (3, group * tile + 2) if orientation == "rows" else (group * tile + 3, 2)
            box = draw.textbbox((x, y), title, font=font)
            draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill="black")
            draw.text((x, y), title, fill="white", font=font)
    return canvas


def duel_grid(
    clean_inputs: torch.Tensor | list[torch.Tensor],
    protected_inputs: torch.Tensor | list[torch.Tensor],
    clean_samples: torch.Tensor,
    protected_samples: torch.Tensor,
    *,
    tile: int = 128,
) -> Image.Image:
    """The four-row LoRA duel picture (rows in :data:`ROW_TITLES` order)."""
    images = (clean_inputs, protected_inputs, clean_samples, protected_samples)
    return comparison_grid(list(zip(ROW_TITLES, images)), tile=tile)


def _high_pass_gray(images: torch.Tensor) -> torch.Tensor:
    """N×3×S×S [0, 1] -> N×S×S: luma minus its BLUR×BLUR box blur, zero mean per image."""
    luma = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    blurred = F.avg_pool2d(F.pad(luma, [BLUR // 2] * 4, mode="reflect"), BLUR, stride=1)
    detail = (luma - blurred).squeeze(1)
    return detail - detail.mean(dim=(-2, -1), keepdim=True)


def pattern_ncc(images: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Max over circular shifts of the normalised cross-correlation between each high-passed
    image (N×3×S×S, [0, 1]) and the high-passed ``pattern`` (1×3×S×S): N values in [-1, 1]."""
    a, b = _high_pass_gray(images.float()), _high_pass_gray(pattern.float())
    correlation = torch.fft.irfft2(torch.fft.rfft2(a) * torch.fft.rfft2(b).conj(), s=a.shape[-2:])
    norms = a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1)
    return correlation.flatten(1).amax(dim=1) / norms.clamp_min(1e-12)


@torch.no_grad()
def _lpips_matrix(perceptual: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS between every row of ``a`` (N×3×S×S) and of ``b`` (M×…): N×M."""
    device = module_device(perceptual, a.device)
    rows = []
    for image in a:
        repeated = image.unsqueeze(0).expand(b.shape[0], -1, -1, -1)
        rows.append(perceptual(repeated.to(device), b.to(device)).reshape(-1).float().cpu())
    return torch.stack(rows)


def mimicry_scores(
    samples: torch.Tensor | list[torch.Tensor],
    training_images: torch.Tensor | list[torch.Tensor],
    perceptual: torch.nn.Module,
    targets: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, float | str]:
    """The module docstring's numbers for one set of samples against the *clean* training images.

    ``targets``: name -> 1×3×S×S pattern (e.g. ``fastprotect.targets.target_pattern``); without it
    only ``nearest_training_lpips`` is returned.
    """
    samples_sq = _square_batch(samples, METRIC_SIZE)
    nearest = _lpips_matrix(perceptual, samples_sq, _square_batch(training_images, METRIC_SIZE)).amin(1)
    scores: dict[str, float | str] = {"nearest_training_lpips": float(nearest.mean())}
    if targets:
        scores.update(pattern_scores(samples_sq, perceptual, targets))
    return scores


def pattern_scores(
    images: torch.Tensor | list[torch.Tensor], perceptual: torch.nn.Module, targets: Mapping[str, torch.Tensor]
) -> dict[str, float | str]:
    """``pattern_ncc`` (highest over targets of the mean NCC) and ``pattern_lpips`` (lowest over
    targets of the mean LPIPS) of ``images``; ``pattern`` names the target that gave the NCC."""
    images_sq = _square_batch(images, METRIC_SIZE)
    patterns = {name: _square_batch(pattern, METRIC_SIZE) for name, pattern in targets.items()}
    ncc = {name: float(pattern_ncc(images_sq, pattern).mean()) for name, pattern in patterns.items()}
    lpips = {name: float(_lpips_matrix(perceptual, images_sq, pattern).mean()) for name, pattern in patterns.items()}
    best = max(ncc, key=ncc.get)
    return {"pattern_ncc": ncc[best], "pattern_lpips": min(lpips.values()), "pattern": best}


def duel_scores(
    clean_inputs: torch.Tensor | list[torch.Tensor],
    clean_samples: torch.Tensor,
    protected_samples: torch.Tensor,
    perceptual: torch.nn.Module,
    targets: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, dict[str, float | str]]:
    """Scores of both LoRAs' samples, plus ``reference``: the pattern scores of the clean inputs
    themselves (what "no pattern" looks like on this image set)."""
    result = {
        "clean_lora": mimicry_scores(clean_samples, clean_inputs, perceptual, targets),
        "protected_lora": mimicry_scores(protected_samples, clean_inputs, perceptual, targets),
    }
    if targets:
        result["reference"] = pattern_scores(clean_inputs, perceptual, targets)
    return result
