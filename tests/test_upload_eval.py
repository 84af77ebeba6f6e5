"""benchmarks.upload_eval: whole images at upload size, the per-image ratio statistics and issue 29's bars."""

from __future__ import annotations

import argparse

import pytest
import torch
from PIL import Image

from benchmarks import upload_eval


def _folder(tmp_path, per_domain: int):
    for domain in upload_eval.DOMAINS:
        (tmp_path / domain).mkdir()
        for i in range(per_domain):
            Image.new("RGB", (12, 8), (i, 0, 0)).save(tmp_path / domain / f"{domain}_{i:03d}.png")
    return tmp_path


def test_the_sample_draws_the_same_images_per_domain_for_a_seed_and_others_for_another(tmp_path) -> None:
    folder = _folder(tmp_path, 10)
    first = upload_eval.sample_names(folder, 3, seed=0)
    assert first == upload_eval.sample_names(folder, 3, seed=0)
    assert [name.split("/")[0] for name in first] == [d for d in upload_eval.DOMAINS for _ in range(3)]
    assert first != upload_eval.sample_names(folder, 3, seed=1)
    assert len(upload_eval.sample_names(folder, None, seed=0)) == 40  # None: every image


def test_a_whole_image_is_brought_to_the_long_side_up_or_down_on_the_8_bit_grid() -> None:
    pixels = torch.rand(1, 3, 300, 200, generator=torch.Generator().manual_seed(0))
    for long_side, expected in ((150, (150, 100)), (1024, (1024, 683))):
        resized = upload_eval.at_long_side(pixels, long_side)
        assert tuple(resized.shape[-2:]) == expected  # the whole frame, aspect kept: no crop
        assert torch.equal(resized, (resized * 255).round() / 255)


def _per_image(damage: list[float], noise: list[float]) -> dict[str, list[float]]:
    keys = ("lpips", "lpips_vgg", "psnr", "flat_ratio")
    return {"damage": damage, "noise_damage": noise, **{key: [0.0] * len(damage) for key in keys}}


def test_ratios_pool_means_and_the_per_image_statistics_skip_unmeasurable_noise() -> None:
    domains = ["cartoon", "cartoon", "face", "face"]
    # cartoon: 3× and 1×; face: 4× and an image whose noise damage (0.001) is below the measurable bar
    summary = upload_eval.summarise(_per_image([0.03, 0.01, 0.04, 0.05], [0.01, 0.01, 0.01, 0.001]), domains)
    assert summary["cartoon"]["ratio"] == pytest.approx(0.04 / 0.02)
    assert summary["all"]["ratio"] == pytest.approx(0.13 / 0.031)
    assert summary["all"]["measurable"] == 3 and summary["face"]["measurable"] == 1
    assert summary["all"]["share_at_2x"] == pytest.approx(2 / 3)
    assert summary["all"]["min_ratio"] == pytest.approx(1.0)
    assert summary["all"]["worst_decile_mean"] == pytest.approx(1.0)  # the worst tenth of 3 ratios: the worst one
    assert summary["all"]["min_domain_ratio"] == pytest.approx(2.0)


def test_bars_are_met_only_on_the_right_side_of_their_limit_and_unmeasured_ones_say_so() -> None:
    summary = upload_eval.summarise(_per_image([0.07, 0.07], [0.01, 0.02]), ["face", "object"])
    checks = {name: (value, met) for name, value, met in upload_eval.check_bars(summary)}
    assert checks["damage ≥ 0.06"][1] is True
    assert checks["LPIPS-alex ≤ 0.06"][1] is True  # 0 ≤ 0.06
    assert checks["PSNR ≥ 35 dB"][1] is False  # 0 dB
    assert checks["ratio ≥ 2× in every domain"] == (pytest.approx(3.5), True)
    assert checks["≥ 70 % survives JPEG q75"] == (None, None)  # not measured in this run


def test_other_sizes_are_judged_against_the_512_px_ratio_within_20_percent() -> None:
    def entry(ratio: float) -> dict:
        return {"summary": {"all": {"ratio": ratio}}}

    checks = upload_eval.size_consistency({512: entry(3.0), 1024: entry(2.5), 2048: entry(2.3)})
    assert [(size, ok) for size, _, _, ok in checks] == [(1024, True), (2048, False)]
    assert upload_eval.size_consistency({1024: entry(1.0)}) == []


def test_variants_name_config_fields_with_json_values() -> None:
    assert upload_eval.parse_variant("k3=net_downscale=3,fill_form=colour") == ("k3", {"net_downscale": 3, "fill_form": "colour"})
    assert upload_eval.parse_variant("f=mask_floor=0.2") == ("f", {"mask_floor": 0.2})
    with pytest.raises(argparse.ArgumentTypeError):
        upload_eval.parse_variant("no-fields")


def test_the_feature_shift_is_zero_for_no_change_and_grows_with_the_change() -> None:
    from fastprotect.dummy import dummy_perceptual

    perceptual = dummy_perceptual()
    clean = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(upload_eval.feature_shift(perceptual, clean, clean), torch.zeros(2))
    small, large = (upload_eval.feature_shift(perceptual, (clean + s * noise).clamp(0, 1), clean) for s in (0.01, 0.1))
    assert bool((large > small).all()) and bool((small > 0).all())


def test_the_transfer_ratio_is_the_mean_shift_over_the_mean_shift_of_noise() -> None:
    per_image = _per_image([0.02, 0.02], [0.01, 0.01]) | {"shift_alex": [0.2, 0.4], "noise_shift_alex": [0.1, 0.3]}
    assert upload_eval.summarise(per_image, ["face", "face"])["all"]["transfer_alex"] == pytest.approx(0.3 / 0.2)


def test_images_are_measured_one_domain_at_a_time_in_turn() -> None:
    names = ["cartoon/a", "cartoon/b", "face/c", "object/d", "object/e", "painting/f"]
    assert upload_eval.interleave(names) == ["cartoon/a", "face/c", "object/d", "painting/f", "cartoon/b", "object/e"]
