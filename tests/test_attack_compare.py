"""Comparison grid layout and the mimicry numbers (pattern NCC, nearest-training distance)."""

from __future__ import annotations

import pytest
import torch

from attack.compare import METRIC_SIZE, ROW_TITLES, comparison_grid, duel_grid, duel_scores, mimicry_scores, pattern_ncc
from fastprotect.targets import target_pattern
from fastprotect.vocabulary import TARGET_NAMES


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small models: one thread is faster


class MeanAbsolute(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().flatten(1).mean(1)


def _smooth(count: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random 'photos': upsampled noise, no fine periodic texture."""
    coarse = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_duel_grid_has_rows_times_columns_tiles():
    clean = [torch.rand(1, 3, 40, 60), torch.rand(1, 3, 50, 30), torch.rand(1, 3, 32, 32)]
    protected = [image.clone() for image in clean]
    samples = torch.rand(4, 3, 32, 32)
    grid = duel_grid(clean, protected, samples, samples, tile=48)
    assert grid.size == (4 * 48, len(ROW_TITLES) * 48)  # 4 columns (the longest row), 4 rows
    assert grid.mode == "RGB"
    # A short row is padded with white; a full tile holds the image (no label in column 1+).
    assert grid.getpixel((3 * 48 + 10, 10)) == (255, 255, 255)
    tile = comparison_grid([("", torch.zeros(1, 3, 16, 16))], tile=16)
    assert tile.size == (16, 16) and tile.getpixel((8, 8)) == (0, 0, 0)
    groups = [("a", torch.zeros(1, 3, 16, 16)), ("b", torch.full((2, 3, 16, 16), 0.5))]
    side_by_side = comparison_grid(groups, tile=16, orientation="columns", labels=False)
    assert side_by_side.size == (2 * 16, 2 * 16)  # 2 columns (groups) × 2 rows (longest group)
    assert side_by_side.getpixel((8, 8)) == (0, 0, 0) and side_by_side.getpixel((8, 24)) == (255, 255, 255)
    assert side_by_side.getpixel((24, 24)) == (128, 128, 128)


def test_pattern_ncc_finds_a_shifted_pattern_and_not_a_photo():
    pattern = target_pattern("mid", METRIC_SIZE)
    shifted = torch.roll(pattern, shifts=(37, 11), dims=(-2, -1))
    photos = _smooth(2, METRIC_SIZE, seed=0)
    assert float(pattern_ncc(shifted, pattern)) > 0.95
    assert float(pattern_ncc(photos, pattern).max()) < 0.3
    mixed = 0.7 * photos + 0.3 * pattern
    assert (pattern_ncc(mixed, pattern) > pattern_ncc(photos, pattern) + 0.2).all()


def test_scores_rank_copies_of_training_images_as_mimicry():
    training = _smooth(3, 64, seed=1)
    targets = {name: target_pattern(name, METRIC_SIZE) for name in TARGET_NAMES}
    copies = mimicry_scores(training[:2], training, MeanAbsolute(), targets)
    assert copies["nearest_training_lpips"] < 1e-6
    assert set(copies) == {"nearest_training_lpips", "pattern_ncc", "pattern_lpips", "pattern"}
    patterned = 0.5 * training + 0.5 * target_pattern("high", 64)
    scores = duel_scores(training, training[:2], patterned, MeanAbsolute(), targets)
    assert scores["protected_lora"]["nearest_training_lpips"] > scores["clean_lora"]["nearest_training_lpips"]
    assert scores["protected_lora"]["pattern"] == "high"
    assert scores["protected_lora"]["pattern_ncc"] > scores["reference"]["pattern_ncc"] + 0.2
