"""fastprotect.metrics: the invisibility measures agree with the reference implementations."""

from __future__ import annotations

import pytest
import torch

from fastprotect import metrics


def test_ssim_and_psnr_match_torchmetrics() -> None:
    """fastprotect.metrics computes SSIM/PSNR itself (torchmetrics' import costs seconds): same numbers."""
    torchmetrics_image = pytest.importorskip("torchmetrics.functional.image")
    generator = torch.Generator().manual_seed(0)
    for shape in [(1, 3, 64, 64), (2, 3, 37, 80), (1, 3, 8, 8)]:
        a = torch.rand(shape, generator=generator)
        b = (a + 0.05 * torch.randn(shape, generator=generator)).clamp(0, 1)
        expected_ssim = float(torchmetrics_image.structural_similarity_index_measure(a, b, data_range=1.0))
        expected_psnr = float(torchmetrics_image.peak_signal_noise_ratio(a, b, data_range=1.0))
        assert metrics.ssim(a, b) == pytest.approx(expected_ssim, abs=1e-5)
        assert metrics.psnr(a, b) == pytest.approx(expected_psnr, abs=1e-4)
    assert metrics.ssim(a, a) == pytest.approx(1.0) and metrics.psnr(a, a) == float("inf")
