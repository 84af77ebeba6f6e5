"""The one-line verdict: measured visibility and strength against noise of the same energy."""

from __future__ import annotations

import pytest
import torch

from fastprotect import metrics
from fastprotect.dummy import dummy_perceptual, dummy_protector
from fastprotect.images import load_image
from fastprotect.protect import Protector
from fastprotect.verdict import (
    STRENGTH_SCALE,
    VISIBILITY_SCALE,
    clean_reference,
    mimic_copy,
    quick_verdict,
    words,
)


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255).round() / 255


def test_words_follow_the_bands():
    assert words(0.0, VISIBILITY_SCALE) == "hard to see"
    assert words(0.5, VISIBILITY_SCALE) == "clearly visible"
    assert words(0.9, STRENGTH_SCALE).startswith("no stronger")
    assert words(3.0, STRENGTH_SCALE).startswith("much stronger")


def test_the_copy_is_the_mimics_resolution_then_a_centre_crop_on_the_8_bit_grid():
    copy = mimic_copy(_image(600, 2400), mimic_side=1200, crop=128)
    assert copy.shape[-2:] == (128, 128)
    assert torch.equal(copy, (copy * 255).round() / 255)
    assert mimic_copy(_image(40, 50), crop=256).shape[-2:] == (40, 50)  # small images are used whole


def test_verdict_numbers_are_consistent_with_each_other():
    protector = dummy_protector(perceptual=dummy_perceptual())
    clean = _image(96, 128)
    protected = protector.protect(clean, compute_metrics=False).image
    verdict = quick_verdict(protector, clean, protected)
    assert verdict.psnr_db == pytest.approx(metrics.psnr(protected, clean), abs=1e-6)
    assert verdict.lpips is not None and verdict.lpips >= 0
    if verdict.ratio is not None:
        assert verdict.ratio == pytest.approx(verdict.damage / verdict.noise_damage)
    assert f"{verdict.lpips:.3f}" in verdict.sentence
    assert quick_verdict(protector, clean, protected) == verdict  # seeded: the same every time


def test_without_lpips_the_verdict_says_so():
    protector = dummy_protector()
    clean = _image(64, 64)
    verdict = quick_verdict(protector, clean, protector.protect(clean, compute_metrics=False).image)
    assert verdict.lpips is None and verdict.ratio is None and "LPIPS" in verdict.sentence


def test_on_a_real_painting_the_bundled_protection_beats_noise_and_a_larger_budget_is_more_visible(shared_images):
    protector = Protector.from_pretrained()  # the bundled checkpoint, its TAEF2 and LPIPS: offline
    clean = load_image(min((shared_images / "painting").iterdir())).pixels
    light, standard = (quick_verdict(protector, clean, protector.protect(clean, eta=levels / 255, compute_metrics=False).image)
                       for levels in (2, 8))
    assert light.lpips < standard.lpips
    assert standard.damage > 2 * max(standard.noise_damage, 0.0)  # twice what noise of the same energy does


def test_a_protection_that_barely_changes_what_a_mimic_sees_is_called_weak_not_strong():
    """An unchanged copy (the extreme of a flat image the texture budget leaves alone) must not read as a success."""
    from fastprotect.verdict import WEAK_DAMAGE

    protector = dummy_protector(perceptual=dummy_perceptual())
    clean = _image(96, 128)
    verdict = quick_verdict(protector, clean, clean)
    assert verdict.damage is not None and verdict.damage < WEAK_DAMAGE
    assert "weak on this image" in verdict.sentence and "stronger than random noise" not in verdict.sentence
    assert "--min-energy" in verdict.sentence  # the one setting measured to lift flat images (a higher η does not)
    already = quick_verdict(protector, clean, clean, lifted=True)  # with the minimum on, it does not point to it again
    assert "weak on this image" in already.sentence and "already lifted" in already.sentence
    assert "--min-energy" not in already.sentence and "Lift flat images'" not in already.sentence
    protected = protector.protect(clean, compute_metrics=False).image
    strong = quick_verdict(protector, clean, protected)
    assert ("weak on this image" in strong.sentence) == (strong.damage < WEAK_DAMAGE)


def _counting_round_trips(protector) -> list[int]:
    """Wraps the autoencoder's round trip; the list grows by the batch size of each call."""
    calls: list[int] = []
    real = protector.autoencoder.round_trip

    def counted(batch):
        calls.append(batch.shape[0])
        return real(batch)

    protector.autoencoder.round_trip = counted
    return calls


def test_a_clean_reference_computed_before_the_click_gives_the_same_verdict_with_two_round_trips_instead_of_three():
    protector = dummy_protector(perceptual=dummy_perceptual())
    clean = _image(96, 128)
    protected = protector.protect(clean, compute_metrics=False).image
    whole = quick_verdict(protector, clean, protected)
    reference = clean_reference(protector, clean)
    calls = _counting_round_trips(protector)
    with_reference = quick_verdict(protector, clean, protected, reference=reference)
    assert calls == [1, 1]  # the protected copy and the matched noise; the clean view came with the reference
    assert with_reference == whole  # each copy's round trip on its own: the same numbers to the last bit


def test_a_reference_of_another_image_is_ignored_not_trusted():
    protector = dummy_protector(perceptual=dummy_perceptual())
    clean, other = _image(96, 128), _image(96, 128, seed=1)
    protected = protector.protect(clean, compute_metrics=False).image
    whole = quick_verdict(protector, clean, protected)
    foreign = clean_reference(protector, other)
    calls = _counting_round_trips(protector)
    assert quick_verdict(protector, clean, protected, reference=foreign) == whole
    assert calls == [1, 1, 1]  # measured whole again


def test_no_reference_without_lpips_and_levels_read_as_their_floats():
    assert clean_reference(dummy_protector(), _image(64, 64)) is None  # nothing a verdict without LPIPS would use
    clean = _image(64, 80)
    levels = (clean * 255).round().to(torch.uint8)
    assert torch.equal(mimic_copy(levels, crop=48), mimic_copy(clean, crop=48))
