"""Protector end to end on dummy models: sizes, budget after PNG round trip, alpha, ICC, EXIF,
modes, determinism and refinement (fastprotect.protect)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from fastprotect.dummy import dummy_protector
from fastprotect.images import load_image, png_bytes
from fastprotect.losses import encode_target, protection_loss
from fastprotect.vocabulary import TARGET_NAMES

ETA = 8 / 255


@pytest.fixture(scope="module")
def protector():
    return dummy_protector()


@pytest.fixture(scope="module")
def real_perceptual(shared_weights):
    from fastprotect.perceptual import load_perceptual

    return load_perceptual("alex", shared_weights / "alexnet_lpips_features.safetensors")


def _random_rgba(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    # Smooth-ish content plus noise, so the image is not pure noise (LPIPS maps need structure).
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), ((x + y) * 7) % 256], -1)
    rgb = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


@pytest.mark.parametrize("size", [(64, 48), (512, 512), (1000, 333), (2048, 1536)])
def test_any_size_keeps_size_budget_and_alpha_after_png_round_trip(protector, size):
    source = _random_rgba(*size)
    loaded = load_image(source)
    result = protector.protect(loaded, eta=ETA)
    assert result.image.shape == loaded.pixels.shape
    written = Image.open(io.BytesIO(png_bytes(loaded, result.image)))
    assert written.format == "PNG" and written.size == size and written.mode == "RGBA"
    difference = np.abs(np.asarray(written, dtype=np.int16)[..., :3] - np.asarray(source, dtype=np.int16)[..., :3])
    assert difference.max() <= 8
    assert difference.max() >= 1, "the image was not changed at all"
    assert np.array_equal(np.asarray(written)[..., 3], np.asarray(source)[..., 3])
    assert (result.info.width, result.info.height) == size
    assert result.info.linf_levels <= result.info.eta_levels == 8


def test_icc_profile_is_kept(protector):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    _random_rgba(64, 64).convert("RGB").save(buffer, "PNG", icc_profile=profile)
    loaded = load_image(buffer.getvalue())
    written = Image.open(io.BytesIO(png_bytes(loaded, protector.protect(loaded).image)))
    assert written.info.get("icc_profile") == profile


def test_exif_rotated_jpeg_comes_out_upright(protector):
    stored = Image.new("RGB", (80, 40), (200, 30, 30))
    stored.paste((30, 30, 200), (0, 0, 20, 40))  # blue band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif, quality=95)
    loaded = load_image(buffer.getvalue())
    written = Image.open(io.BytesIO(png_bytes(loaded, protector.protect(loaded).image))).convert("RGB")
    assert written.size == (40, 80)
    top_row = np.asarray(written)[2, :, :].astype(int)
    assert top_row[:, 2].mean() > top_row[:, 0].mean()  # the blue band is now on top


def test_same_seed_same_output_and_forced_targets_differ(protector):
    pixels = load_image(_random_rgba(96, 64)).pixels
    first = protector.protect(pixels, target="low", seed=3).image
    assert torch.equal(first, protector.protect(pixels, target="low", seed=3).image)
    assert not torch.equal(first, protector.protect(pixels, target="high", seed=3).image)


def test_auto_target_and_group_come_from_the_mixture(protector):
    pixels = load_image(_random_rgba(96, 64)).pixels
    info = protector.protect(pixels).info
    latent = protector.encoder.encode(torch.nn.functional.interpolate(pixels, size=(32, 32), mode="bilinear", antialias=True))
    assert info.target == TARGET_NAMES[int(protector.mixture.select_target(latent)[0])]
    assert info.group == int(protector.mixture.assign(latent)[0])
    assert info.mode == "pretrained"


def test_smaller_budget_is_respected(protector):
    pixels = load_image(_random_rgba(64, 64)).pixels
    result = protector.protect(pixels, eta=3 / 255)
    assert result.info.linf_levels <= 3
    assert ((result.image - pixels).abs() * 255).round().max() <= 3


@pytest.mark.parametrize("bad", [dict(eta=0.0), dict(eta=40 / 255), dict(target="medium"), dict(refine_steps=-1)])
def test_bad_arguments_are_refused(protector, bad):
    with pytest.raises(ValueError):
        protector.protect(torch.zeros(1, 3, 16, 16), **bad)


def test_refinement_lowers_the_protection_loss():
    protector = dummy_protector()
    pixels = load_image(_random_rgba(64, 64, seed=5)).pixels
    target_image = protector.target_images[TARGET_NAMES.index("mid") : TARGET_NAMES.index("mid") + 1]
    target = encode_target(protector.encoder, target_image, 64, 64)

    def loss(image):
        with torch.no_grad():
            return float(protection_loss(protector.encoder(image), target)[0])

    plain = protector.protect(pixels, target="mid", adaptive_strength=False).image
    refined = protector.protect(pixels, target="mid", adaptive_strength=False, refine_steps=5).image
    assert loss(refined) < loss(plain)
    assert ((refined - pixels).abs() * 255).round().max() <= 8


def test_per_image_mode_without_mixture_pulls_towards_the_target():
    protector = dummy_protector(with_mixture=False, per_image_steps=5)
    assert protector.mode == "per-image"
    pixels = load_image(_random_rgba(64, 64, seed=7)).pixels
    result = protector.protect(pixels, target="high", adaptive_strength=False)
    target = encode_target(protector.encoder, protector.target_images[2:3], 64, 64)
    with torch.no_grad():
        before = float(protection_loss(protector.encoder(pixels), target)[0])
        after = float(protection_loss(protector.encoder(result.image), target)[0])
    assert after < before
    assert result.info.mode == "per-image" and result.info.group is None
    assert result.info.linf_levels <= 8


def test_adaptive_strength_with_real_lpips_reduces_visible_change(real_perceptual):
    protector = dummy_protector(perceptual=real_perceptual)
    pixels = load_image(_random_rgba(128, 96, seed=9)).pixels
    plain = protector.protect(pixels, adaptive_strength=False, target="mid")
    adaptive = protector.protect(pixels, adaptive_strength=True, target="mid")
    assert adaptive.lpips_map is not None and adaptive.lpips_map.shape == (1, 1, 96, 128)
    assert adaptive.info.adaptive_strength and adaptive.info.lpips is not None
    assert adaptive.info.lpips <= plain.info.lpips + 1e-4
    assert adaptive.info.linf_levels <= 8


def test_progress_is_reported_in_order(protector):
    seen: list[float] = []
    protector.protect(torch.rand(1, 3, 32, 32), progress=lambda fraction, stage: seen.append(fraction))
    assert seen[0] < seen[-1] == 1.0
    assert seen == sorted(seen)


@pytest.mark.parametrize("size", [(8, 8), (9, 40), (300, 10)])
def test_smallest_images_work_with_real_lpips(real_perceptual, size):
    protector = dummy_protector(perceptual=real_perceptual)
    pixels = load_image(_random_rgba(*size)).pixels
    result = protector.protect(pixels)
    assert result.image.shape == pixels.shape
    assert result.info.lpips is not None and result.info.linf_levels <= 8


def test_a_checkpoint_whose_encoder_is_unreachable_is_an_error_not_a_mode_switch(tmp_path, monkeypatch):
    """No silent fallback: the error names the missing encoder; per-image mode only when asked for."""
    import fastprotect.protect as protect_module
    from fastprotect.dummy import dummy_autoencoder, dummy_mixture
    from fastprotect.hub import WeightsUnavailableError

    dummy_mixture().save_pretrained(tmp_path / "ckpt")  # names encoder kind sd-vae, source "dummy"
    calls = []

    def fake_load(kind, source=None, **kwargs):
        calls.append((kind, source))
        if source == "dummy":
            raise WeightsUnavailableError("no such weights offline: set FASTPROTECT_SD_VAE")
        return dummy_autoencoder()

    monkeypatch.setattr(protect_module, "load_autoencoder", fake_load)
    monkeypatch.setattr("fastprotect.perceptual.load_perceptual", lambda *args, **kwargs: None)
    with pytest.raises(WeightsUnavailableError, match="FASTPROTECT_SD_VAE"):
        protect_module.Protector.from_pretrained(tmp_path / "ckpt")
    assert calls == [("sd-vae", "dummy")]
    protector = protect_module.Protector.from_pretrained(per_image=True, encoder_kind="taesd", encoder_source="anything", per_image_steps=2)
    assert protector.mode == "per-image" and calls[-1] == ("taesd", "anything")


def test_a_mistyped_checkpoint_is_an_error_naming_it(tmp_path):
    from fastprotect.hub import WeightsUnavailableError

    from fastprotect.protect import Protector

    with pytest.raises(WeightsUnavailableError, match="no-such-checkpoint"):
        Protector.from_pretrained(tmp_path / "no-such-checkpoint")


@pytest.mark.parametrize("with_generator", [True, False])
def test_levels_in_give_the_same_protection_as_floats_in_as_levels_out(with_generator, tmp_path):
    """Protector.protect on 8-bit levels (the CLI's load_image(levels=True)): the same protected pixels, as uint8
    levels, the same report, and the budget map only when kept. The generator reads the levels band by band; the
    mixture converts them first."""
    from fastprotect.generator import PerturbationGenerator

    protector = dummy_protector(with_generator=with_generator)
    if with_generator:  # the bands' seams inside the image (dummy images are small)
        protector.generator.protect_image = _with_band_rows(protector.generator, 64)
    rng = np.random.default_rng(5)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (150, 203, 3), dtype=np.uint8)).save(path)
    floats, levels = load_image(path), load_image(path, levels=True)
    expected = protector.protect(floats)
    result = protector.protect(levels)
    assert result.image.dtype == torch.uint8 and torch.equal(result.image, (expected.image * 255).round().to(torch.uint8))
    assert result.info.linf_levels == expected.info.linf_levels and result.info.ssim == pytest.approx(expected.info.ssim)
    assert result.info.psnr_db == pytest.approx(expected.info.psnr_db, abs=1e-4)
    assert torch.allclose(result.perturbation, expected.perturbation, atol=1e-6)
    assert png_bytes(levels, result.image) == png_bytes(floats, expected.image)
    if with_generator:
        assert torch.equal(result.budget_map, expected.budget_map)
        assert protector.protect(levels, keep_budget_map=False).budget_map is None
    assert isinstance(protector.generator, PerturbationGenerator) == with_generator


def _with_band_rows(generator, rows: int):
    protect_image = generator.protect_image
    return lambda *args, **kwargs: protect_image(*args, **{**kwargs, "band_rows": rows})
