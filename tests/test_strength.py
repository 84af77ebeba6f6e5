"""Adaptive strength, projection and budget-keeping quantisation (fastprotect.strength)."""

import pytest
import torch

from fastprotect.strength import ALPHA, BETA, adaptive_scale, project_linf, quantise_within_budget
from fastprotect.vocabulary import levels_from_eta


def test_decile_steps_boost_least_visible_and_damp_most_visible():
    visibility = torch.arange(1000, dtype=torch.float32).reshape(1, 1, 10, 100)  # decile d = row d
    scale = adaptive_scale(visibility)
    rows = scale[0, 0, :, 0].tolist()
    assert rows[:3] == pytest.approx([ALPHA] * 3)
    assert rows[3:7] == pytest.approx([1.0] * 4)
    assert rows[7:] == pytest.approx([BETA, BETA**2, BETA**3])


def test_scale_does_not_depend_on_lpips_absolute_scale():
    visibility = torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(0))
    assert torch.equal(adaptive_scale(visibility), adaptive_scale(visibility * 37.0))


def test_zero_steps_is_identity():
    assert torch.equal(adaptive_scale(torch.rand(1, 1, 8, 8), steps=0), torch.ones(1, 1, 8, 8))


def test_huge_maps_use_subsampled_quantiles():
    visibility = torch.rand(1, 1, 1200, 1000)  # 1.2M pixels > torch.quantile's comfortable size
    scale = adaptive_scale(visibility)
    assert scale.shape == visibility.shape
    assert (scale == ALPHA).float().mean() == pytest.approx(0.3, abs=0.01)


def test_project_linf_clips_to_budget():
    delta = torch.tensor([-1.0, -0.01, 0.0, 0.02, 1.0])
    assert torch.allclose(project_linf(delta, 0.03), torch.tensor([-0.03, -0.01, 0.0, 0.02, 0.03]))


@pytest.mark.parametrize("eta_levels", [1, 4, 8, 16])
def test_quantisation_keeps_budget_after_rounding(eta_levels):
    generator = torch.Generator().manual_seed(eta_levels)
    original = torch.randint(0, 256, (1, 3, 40, 40), generator=generator).float() / 255
    eta = eta_levels / 255
    # A perturbation that sits just past the budget everywhere: naive rounding would overshoot.
    protected = original + (torch.rand(original.shape, generator=generator) * 2 - 1) * (eta + 0.6 / 255)
    result = quantise_within_budget(original, protected, eta)
    levels = (result * 255 - original * 255).round().abs()
    assert levels.max() <= eta_levels
    assert torch.equal(result * 255, (result * 255).round())  # on the 8-bit grid
    assert result.min() >= 0 and result.max() <= 1


def test_budget_levels_floor():
    assert levels_from_eta(8 / 255) == 8
    assert levels_from_eta(8.9 / 255) == 8
    assert levels_from_eta(0.5 / 255) == 0
