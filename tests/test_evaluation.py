"""fastprotect.evaluation: the harness the evaluation and the benchmarks share (its definitions of
pull, damage and invisibility), the robustness transforms, the per-domain summary, and the extra
measures (flat-region energy ratio, matched noise). Dummy random models, small tensors."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from fastprotect import metrics
from fastprotect.dummy import dummy_autoencoder, dummy_perceptual
from fastprotect.evaluation import (
    TRANSFORMS,
    Harness,
    flat_region_energy_ratio,
    local_contrast,
    matched_noise,
    psnr_per_image,
    summarise,
    transform,
)


@pytest.fixture(scope="module")
def models():
    return dummy_autoencoder(), dummy_perceptual().eval()


@pytest.fixture(scope="module")
def harness(models) -> Harness:
    autoencoder, perceptual = models
    targets = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return Harness(autoencoder, perceptual, targets)


def images(n: int = 3, size: tuple[int, int] = (32, 32), seed: int = 0) -> torch.Tensor:
    x = torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))
    return (x * 255).round() / 255


def protect(x: torch.Tensor, levels: int = 8, seed: int = 5) -> torch.Tensor:
    sign = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(seed)).float() * 2 - 1
    return (x + sign * levels / 255).clamp(0, 1)


def test_measure_follows_the_documented_definitions(models, harness) -> None:
    autoencoder, perceptual = models
    x = images()
    x_hat = protect(x)
    targets = torch.tensor([0, 2, 1])
    got = harness.measure(x, x_hat, targets)
    assert set(got) == {"lpips", "psnr", "ssim", "linf", "pull", "damage"}
    assert all(v.shape == (3,) for v in got.values())
    with torch.no_grad():
        encode = autoencoder.encoder.encode
        resized = torch.nn.functional.interpolate(harness.target_images, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        target_latents = encode(resized)[targets]
        pull = metrics.latent_pull(encode(x), encode(x_hat), target_latents)
        damage = metrics.mimic_damage(perceptual, x, autoencoder.round_trip(x), autoencoder.round_trip(x_hat))
        lpips = perceptual(x_hat, x).flatten()
    torch.testing.assert_close(got["pull"], pull)
    torch.testing.assert_close(got["damage"], damage.flatten(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got["lpips"], lpips, atol=1e-6, rtol=1e-5)
    assert got["linf"].tolist() == [8.0, 8.0, 8.0]
    assert got["psnr"][0].item() == pytest.approx(metrics.psnr(x_hat[:1], x[:1]))
    assert got["ssim"][1].item() == pytest.approx(metrics.ssim(x_hat[1:2], x[1:2]))


def test_an_unprotected_image_has_no_pull_and_no_damage(harness) -> None:
    x = images(2)
    got = harness.measure(x, x.clone(), torch.tensor([0, 1]))
    torch.testing.assert_close(got["pull"], torch.ones(2))
    torch.testing.assert_close(got["damage"], torch.zeros(2), atol=1e-6, rtol=0)
    assert got["linf"].tolist() == [0.0, 0.0] and math.isinf(got["psnr"][0].item())


def test_clean_references_and_target_latents_are_computed_once(harness) -> None:
    x = images(2, seed=3)
    ref = harness.reference(x)
    assert harness.reference(x.clone()) is ref and harness.reference(ref) is ref
    assert harness.reference(images(2, seed=4)) is not ref
    assert harness.target_latents(32, 32) is harness.target_latents(32, 32)
    assert harness.target_latents(40, 24).shape[0] == 3
    # an image of another size (not a multiple of 8) is measured against targets of its own size
    odd = images(1, (68, 44))
    assert harness.measure(odd, protect(odd), torch.tensor([2]))["pull"].shape == (1,)


def test_robustness_measures_against_the_original_clean_image(harness) -> None:
    x = images(2, seed=6)
    x_hat = protect(x)
    plain = harness.efficacy(x, x_hat, torch.tensor([0, 1]))
    seen = harness.efficacy(x, x_hat, torch.tensor([0, 1]), seen_clean=x.clone())
    torch.testing.assert_close(plain["pull"], seen["pull"])
    torch.testing.assert_close(plain["damage"], seen["damage"], atol=1e-6, rtol=0)
    jpeg = transform(x_hat, "jpeg75", torch.Generator())
    moved = harness.efficacy(x, jpeg, torch.tensor([0, 1]), seen_clean=transform(x, "jpeg75", torch.Generator()))
    assert not torch.allclose(moved["damage"], plain["damage"])


def test_optional_vgg_lpips_and_flat_ratio(models) -> None:
    autoencoder, perceptual = models
    harness = Harness(autoencoder, perceptual, torch.rand(3, 3, 32, 32), perceptual_vgg=dummy_perceptual(seed=1).eval(), extended=True)
    got = harness.invisibility(images(2), protect(images(2)))
    assert {"lpips_vgg", "flat_ratio"} <= set(got) and got["lpips_vgg"].shape == (2,)
    assert not torch.allclose(got["lpips_vgg"], got["lpips"])


def test_summary_is_the_mean_per_domain_and_over_all() -> None:
    per_image = {"damage": torch.tensor([1.0, 2.0, 4.0]), "pull": torch.tensor([0.5, 0.5, 0.8]), "other": torch.tensor([1.0])}
    summary = summarise(per_image, ["face", "cartoon", "face"])
    assert list(summary) == ["cartoon", "face", "all"]
    assert summary["face"] == {"damage": 2.5, "pull": pytest.approx(0.65)}
    assert summary["all"]["damage"] == pytest.approx(7 / 3) and "other" not in summary["all"]


@pytest.mark.parametrize("name", TRANSFORMS)
def test_robustness_transforms_keep_shape_and_range(name) -> None:
    x = images(2, (32, 24))
    out = transform(x, name, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1 and not torch.equal(out, x)
    again = transform(x, name, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the same seed gives the same noise to the clean and the protected image


def test_unknown_transform_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown transform"):
        transform(images(1), "blur", torch.Generator())


def test_psnr_per_image() -> None:
    x = images(2)
    y = x.clone()
    y[1] = (y[1] + 2 / 255).clamp(0, 1)
    out = psnr_per_image(y, x)
    assert math.isinf(out[0].item()) and out[1].item() == pytest.approx(metrics.psnr(y[1:], x[1:]), abs=1e-4)


def test_local_contrast_is_the_std_of_luminance_in_a_7x7_window() -> None:
    x = images(1, (20, 20), seed=2)
    contrast = local_contrast(x)
    luma = 0.299 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2]
    window = luma[7:14, 4:11]  # centred on (10, 7)
    assert contrast[0, 10, 7].item() == pytest.approx(window.std(unbiased=False).item(), abs=1e-5)
    assert local_contrast(torch.full((1, 3, 12, 12), 0.4)).abs().max() < 1e-3


def test_flat_region_energy_ratio() -> None:
    x = images(1, (30, 30), seed=8).clamp(max=1 - 4 / 255)  # room for the perturbations below
    contrast = local_contrast(x)
    flat = (contrast <= contrast.median())[:, None].expand_as(x)  # contains the lowest third, not the highest
    a = 2 / 255
    assert flat_region_energy_ratio(x, x + a).item() == pytest.approx(1.0, rel=1e-3)
    assert flat_region_energy_ratio(x, x + torch.where(flat, 2 * a, a)).item() == pytest.approx(2.0, rel=1e-3)
    assert flat_region_energy_ratio(x, x + torch.where(flat, a, 2 * a)).item() == pytest.approx(0.5, rel=1e-3)
    assert math.isnan(flat_region_energy_ratio(x, torch.where(flat, x + a, x)).item())  # nothing in the textured third


def test_matched_noise_has_the_protections_psnr_and_stays_random_where_the_image_saturates() -> None:
    x = images(2, (24, 24), seed=9)
    x[0, :, :8] = 0.0  # black and white areas: noise added then clipped, never a uniform shift
    x[1, :, -8:] = 1.0
    generator = torch.Generator().manual_seed(0)
    x_hat = (x + (torch.rand(x.shape, generator=generator) * 2 - 1) * 6 / 255).clamp(0, 1)
    x_hat = (x_hat * 255).round() / 255
    noise = matched_noise(x, x_hat, torch.Generator().manual_seed(1))
    assert noise.shape == x.shape and 0 <= noise.min() and noise.max() <= 1
    assert torch.allclose(noise * 255, (noise * 255).round(), atol=1e-4)  # on the 8-bit grid
    for i in range(2):
        assert metrics.psnr(noise[i : i + 1], x[i : i + 1]) == pytest.approx(metrics.psnr(x_hat[i : i + 1], x[i : i + 1]), abs=0.05)
    black, white = noise[0, :, :8], noise[1, :, -8:]
    assert 0.3 < (black == 0).float().mean() < 0.7  # about half the moves point out of range and are clipped away
    assert 0.3 < (white == 1).float().mean() < 0.7
    assert not torch.allclose(noise, x_hat)
    assert torch.equal(matched_noise(x, x_hat, torch.Generator().manual_seed(1)), noise)  # seeded
    assert torch.equal(matched_noise(x, x.clone(), torch.Generator()), x)  # no perturbation, no noise


def test_importing_the_harness_loads_no_network_library_and_protect_does_not_import_it() -> None:
    code = ("import sys, fastprotect.evaluation; "
            "print(sorted(m for m in ('lpips', 'PIL', 'sklearn', 'torchvision', 'diffusers') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    code = "import sys, fastprotect.protect; print('fastprotect.evaluation' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
