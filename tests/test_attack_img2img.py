"""img2img (SDEdit) and the VAE round trip on the dummy SD-1.5 stack: shapes, sizes, determinism."""

from __future__ import annotations

import pytest
import torch

from attack.img2img import Img2ImgSettings, img2img, img2img_pair
from attack.roundtrip import round_trip, roundtrip_report
from fastprotect.dummy import dummy_sd15_pipeline

FAST = Img2ImgSettings(prompt="a painting", strength=0.5, steps=4, guidance_scale=2.0, seed=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small models: one thread is faster


@pytest.fixture(scope="module")
def pipe():
    return dummy_sd15_pipeline(seed=0)


def test_img2img_returns_inputs_size_and_repeats(pipe):
    generator = torch.Generator().manual_seed(0)
    odd = torch.rand(1, 3, 30, 44, generator=generator)  # not a multiple of 8: runs at 32×40, comes back
    square = torch.rand(1, 3, 32, 32, generator=generator)
    outputs = img2img(pipe, [odd, square], FAST)
    assert [tuple(out.shape) for out in outputs] == [(1, 3, 30, 44), (1, 3, 32, 32)]
    assert all(0 <= float(out.min()) and float(out.max()) <= 1 for out in outputs)
    clean_edit, protected_edit = img2img_pair(pipe, odd, odd.clone(), FAST)
    assert torch.equal(clean_edit, outputs[0]) and torch.equal(protected_edit, outputs[0])  # same seed, same pixels


def test_img2img_rejects_bad_strength(pipe):
    with pytest.raises(ValueError, match="strength"):
        img2img(pipe, torch.rand(1, 3, 32, 32), Img2ImgSettings(strength=0.0))


class MeanAbsolute(torch.nn.Module):
    """A stand-in perceptual distance (B values) for plumbing tests."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().flatten(1).mean(1)


def test_round_trip_through_pipeline_vae_keeps_size(pipe):
    image = torch.rand(1, 3, 30, 44, generator=torch.Generator().manual_seed(2))
    out = round_trip(pipe.vae, image)
    assert out.shape == image.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    report = roundtrip_report(pipe.vae, image, image, MeanAbsolute())
    assert torch.equal(report.clean_round_trip, report.protected_round_trip)
    assert report.lpips_protected == 0 and report.damage == 0
    assert set(report.as_dict()) == {"lpips_protected", "lpips_clean_round_trip", "lpips_protected_round_trip", "damage"}
