"""Real weights: through the TAEF2 round trip (the mimic's view), a protected image lands clearly
farther from the original than the clean image's own round trip. LPIPS AlexNet, real backbone.

Run with ``-s`` to see the numbers. The protected image comes from a committed checkpoint through the
Protector (``scripts.make_demo_figure.protected_copy``, shared with the figure script): the mixture, which spends
the whole L∞ budget, is compared with random noise of the same budget; the default generator, which spends about a
quarter of that energy, with random noise of the same *energy* (issue 10's control).
"""

from __future__ import annotations

import time

import torch

from attack.pipeline import center_square, one_thread
from attack.roundtrip import load_round_tripper, roundtrip_report
from fastprotect.bundle import bundled_checkpoint_for
from fastprotect.evaluation import matched_noise
from fastprotect.images import load_image
from fastprotect.perceptual import load_perceptual
from scripts.make_demo_figure import ETA, protected_copy

SIZE = 192  # small enough for a few PGD steps on 2 busy CPU cores
PGD_STEPS = 10  # step size η/4: the L∞ boundary is reached in 4 steps, the rest refine
IMAGE = "painting/painting_004.jpg"  # Hokusai, The Great Wave (public domain)


def test_taef2_round_trip_of_protected_image_lands_far_from_original(shared_weights, shared_images):
    perceptual = load_perceptual("alex", shared_weights / "alexnet_lpips_features.safetensors")
    autoencoder = load_round_tripper("taef2", shared_weights, device="cpu")
    # Back on the 8-bit grid after the resize, as a loaded image is: the budget is defined there.
    image = (center_square(load_image(shared_images / IMAGE).pixels, SIZE) * 255).round() / 255
    start = time.perf_counter()
    with one_thread():  # on a machine whose 2 cores are shared, one thread is ~3× faster here
        protected, how = protected_copy(autoencoder, image, perceptual, pgd_steps=PGD_STEPS, checkpoint=bundled_checkpoint_for("mixture"))
        seconds = time.perf_counter() - start
        report = roundtrip_report(autoencoder, image, protected, perceptual)
        # Control: random ±η signs, the same budget without a target. A VAE round trip mostly
        # washes such noise out; the targeted perturbation must survive it and grow instead.
        signs = torch.randint(0, 2, image.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        control = roundtrip_report(autoencoder, image, (image + ETA * signs).clamp(0, 1), perceptual)
    print(f"\n[{IMAGE} at {SIZE}², {how}, {seconds:.1f} s] " + ", ".join(f"{k}={v:.3f}" for k, v in report.as_dict().items()))
    print("[random-sign control, same budget] " + ", ".join(f"{k}={v:.3f}" for k, v in control.as_dict().items()))
    assert float((protected - image).abs().max()) <= ETA + 1e-6
    assert report.lpips_clean_round_trip < 0.15  # TAEF2 reconstructs the clean image well
    # The mimic's view of the protected image is far off, and clearly farther than the clean view.
    assert report.lpips_protected_round_trip > 2 * report.lpips_clean_round_trip
    # Measured: 0.095 with the bundled 320-step checkpoint, 0.157 with 10 PGD steps; noise: 0.040.
    assert report.damage > 0.05
    # The round trip amplifies the targeted perturbation (it does not purify it) ...
    assert report.lpips_protected_round_trip > report.lpips_protected
    # ... and that is the target's doing, not the budget's: same-budget noise does far less damage.
    assert report.damage > 2 * control.damage


def test_the_default_generator_beats_noise_of_its_own_energy_through_the_round_trip(shared_weights, shared_images):
    perceptual = load_perceptual("alex", shared_weights / "alexnet_lpips_features.safetensors")
    autoencoder = load_round_tripper("taef2", shared_weights, device="cpu")
    image = (center_square(load_image(shared_images / IMAGE).pixels, SIZE) * 255).round() / 255
    with one_thread():
        protected, how = protected_copy(autoencoder, image, perceptual, checkpoint=bundled_checkpoint_for("generator"))
        report = roundtrip_report(autoencoder, image, protected, perceptual)
        noise = matched_noise(image, protected, torch.Generator().manual_seed(0))
        control = roundtrip_report(autoencoder, image, noise, perceptual)
    print(f"\n[{IMAGE} at {SIZE}², {how}] " + ", ".join(f"{k}={v:.3f}" for k, v in report.as_dict().items()))
    print("[random noise, same energy] " + ", ".join(f"{k}={v:.3f}" for k, v in control.as_dict().items()))
    assert "taef2-generator" in how
    assert float((protected - image).abs().max()) <= ETA + 1e-6
    assert report.lpips_protected < 0.06  # faint on the image itself
    # The mimic's view moves farther from the original than the clean view does, and the round trip amplifies it.
    assert report.lpips_protected_round_trip > report.lpips_clean_round_trip
    assert report.lpips_protected_round_trip > report.lpips_protected
    # Noise that costs as much (same PSNR) does clearly less damage.
    assert report.damage > 2 * control.damage
