"""The perturbation generator (fastprotect.generator): its budget rule, its files, its place in the Protector,
and its trainer (train/generator.py). Random weights: these prove the guarantees, not the protection."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from fastprotect.dummy import dummy_autoencoder, dummy_generator, dummy_protector
from fastprotect.generator import (
    GeneratorCheckpointError,
    GeneratorConfig,
    PerturbationGenerator,
    cap_energy,
    fill_floor,
    psnr_floor_db,
)
from fastprotect.images import load_image, png_bytes
from fastprotect.protect import Protector
from fastprotect.vocabulary import eta_from_levels


def half_flat_image(height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """Left half one flat grey, right half random texture: 1×3×H×W on the 8-bit grid."""
    image = torch.full((1, 3, height, width), 0.5)
    texture = torch.rand((1, 3, height, width - width // 2), generator=torch.Generator().manual_seed(seed))
    image[..., width // 2 :] = texture
    return (image * 255).round() / 255


def test_the_budget_map_is_the_floor_on_flat_areas_and_full_on_texture():
    image = half_flat_image()
    budget = dummy_generator(mask_floor=0.1, contrast_reference=0.06, mask_gamma=1.0).budget(image)  # no pattern: the fixed floor
    assert budget.shape == (1, 1, 64, 64)
    assert torch.allclose(budget[..., :, :20], torch.tensor(0.1))  # far from the edge: flat
    assert torch.allclose(budget[..., :, 40:], torch.tensor(1.0))  # random texture: contrast ≫ 0.06


def test_the_energy_cap_bounds_the_rms_and_leaves_weaker_patterns_alone():
    strong = torch.ones(2, 3, 8, 8) * 0.1
    capped = cap_energy(strong, 0.02)
    assert torch.allclose(capped.pow(2).flatten(1).mean(1).sqrt(), torch.tensor([0.02, 0.02]))
    weak = torch.ones(1, 3, 8, 8) * 0.01
    assert torch.equal(cap_energy(weak, 0.02), weak)


def test_generated_perturbation_respects_eta_energy_and_flat_areas():
    model = dummy_generator(mask_floor=0.1, contrast_reference=0.06)
    image = half_flat_image()
    eta = model.config.eta
    with torch.no_grad():
        delta = model.perturbation(image)
    assert delta.abs().max() <= eta + 1e-7
    assert delta.pow(2).mean().sqrt() <= model.config.rms_levels / 255 + 1e-7
    assert delta[..., :20].abs().max() <= 0.1 * eta + 1e-7  # flat: at most the floor's share
    assert delta[..., 40:].abs().max() > 0.5 * eta  # texture: most of the budget is used


def test_the_minimum_energy_is_an_argument_of_the_forward_path_checked_against_the_cap():
    """min_energy=None is the checkpoint's own; any other value acts like a checkpoint configured with it, on the
    same network (no copy of the generator per value), and one outside 0…cap is refused in one sentence."""
    fixed = dummy_generator(mask_floor=0.05, contrast_reference=0.06, rms_levels=3.5)
    configured = fixed.with_config(fill_rms_levels=2.5, fill_floor_max=1.0)
    images = torch.cat([mostly_flat_image(), half_flat_image(seed=1)])
    with torch.no_grad():
        assert torch.equal(configured.perturbation(images, min_energy=0), fixed.with_config(fill_floor_max=1.0).perturbation(images))
        assert torch.equal(fixed.with_config(fill_floor_max=1.0).perturbation(images, min_energy=2.5), configured.perturbation(images))
        assert torch.equal(configured.perturbation(images, min_energy=None), configured.perturbation(images))
    for wrong in (3.6, -1, float("nan"), "2"):
        with pytest.raises(ValueError, match="min_energy"):
            configured.perturbation(images, min_energy=wrong)


def mostly_flat_image(size: int = 64, textured: int = 8, seed: int = 0) -> torch.Tensor:
    """One flat grey with a small textured square in a corner: the budget finds almost no texture."""
    image = torch.full((1, 3, size, size), 0.5)
    image[..., :textured, :textured] = torch.rand((1, 3, textured, textured), generator=torch.Generator().manual_seed(seed))
    return (image * 255).round() / 255


def rms_levels(delta: torch.Tensor) -> torch.Tensor:
    return delta.pow(2).flatten(1).mean(1).sqrt() * 255


def test_the_minimum_energy_raises_the_floor_of_nearly_flat_images_only():
    fixed = dummy_generator(mask_floor=0.05, contrast_reference=0.06, rms_levels=3.5)
    lifted = fixed.with_config(fill_rms_levels=2.5, fill_floor_max=1.0)
    images = torch.cat([mostly_flat_image(), half_flat_image(seed=1)])
    with torch.no_grad():
        before, after = fixed.perturbation(images), lifted.perturbation(images)
        budget = lifted.budget(images, lifted.raw(images))
    assert rms_levels(before)[0] < 1.5 and rms_levels(before)[1] > 2.5  # flat: the fixed floor leaves it nearly untouched
    assert rms_levels(after)[0] == pytest.approx(2.5, rel=0.02)  # lifted to the minimum, no further
    assert budget[0].min() > 0.05 and budget[1].min() == pytest.approx(0.05)
    assert torch.equal(after[1], before[1])  # an image already above the minimum is unchanged
    assert after.abs().max() <= fixed.config.eta + 1e-7
    with torch.no_grad():  # the rule does not depend on η: at half the budget, half the minimum
        assert rms_levels(lifted.perturbation(images, fixed.config.eta / 2))[0] == pytest.approx(1.25, rel=0.02)


def test_a_lifted_image_is_changed_in_colour_not_brightness():
    """fill_form "colour": the lifted image's δ has no BT.601 luma, its colour differences are those of the lift in
    brightness and colour scaled up; an image above the minimum keeps its δ, brightness included."""
    from fastprotect.generator import colour_only

    fixed = dummy_generator(mask_floor=0.05, contrast_reference=0.06, rms_levels=3.5)
    colour = fixed.with_config(fill_rms_levels=2.5, fill_floor_max=1.0, fill_form="colour")
    both = colour.with_config(fill_form="both")
    images = torch.cat([mostly_flat_image(), half_flat_image(seed=1)])
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    with torch.no_grad():
        in_colour, in_both, before = colour.perturbation(images), both.perturbation(images), fixed.perturbation(images)
    brightness = (in_colour * luma).sum(1)
    assert brightness[0].abs().max() < 1e-6 and (in_both[0:1] * luma).sum(1).abs().max() > 0.1 / 255
    assert rms_levels(in_colour)[0] == pytest.approx(2.5, rel=0.02) == float(rms_levels(in_both)[0])
    assert torch.equal(in_colour[1], before[1]) and (in_colour[1:] * luma).sum(1).abs().max() > 0.1 / 255
    # same direction in colour: the colour-only δ is the colour part of a (higher-floored) δ, not another pattern
    cosine = torch.nn.functional.cosine_similarity(in_colour[0].flatten(), colour_only(in_both[0:1]).flatten(), dim=0)
    assert cosine > 0.9
    assert torch.allclose(colour_only(colour_only(in_both)), colour_only(in_both), atol=1e-7)  # a projection


def test_by_default_a_lifted_image_changes_along_the_blue_difference_only():
    """fill_form "blue-yellow" (the default): the lifted image's δ, read back as JPEG's Y Cb Cr, has a Cb and
    neither Y nor Cr; it reaches the same minimum; an image above the minimum keeps its δ, every axis included."""
    from fastprotect.generator import FILL_FORMS, blue_yellow, in_form

    assert GeneratorConfig().fill_form == "blue-yellow" == FILL_FORMS[0]
    fixed = dummy_generator(mask_floor=0.05, contrast_reference=0.06, rms_levels=3.5)
    lifted = fixed.with_config(fill_rms_levels=2.5, fill_floor_max=1.0)
    images = torch.cat([mostly_flat_image(), half_flat_image(seed=1)])
    to_ycbcr = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    with torch.no_grad():
        delta, before = lifted.perturbation(images), fixed.perturbation(images)
    y, cb, cr = torch.einsum("kc,bchw->kbhw", to_ycbcr, delta)
    assert y[0].abs().max() < 1e-6 and cr[0].abs().max() < 1e-6 and cb[0].abs().max() > 1 / 255
    assert rms_levels(delta)[0] == pytest.approx(2.5, rel=0.02)
    assert delta.abs().max() <= fixed.config.eta + 1e-7
    assert torch.equal(delta[1], before[1]) and cr[1].abs().max() > 0.1 / 255
    change = torch.randn(2, 3, 8, 8)
    assert torch.allclose(blue_yellow(blue_yellow(change)), blue_yellow(change), atol=1e-5)  # a projection
    assert torch.equal(in_form(change, "both"), change) and torch.equal(in_form(change, "blue-yellow"), blue_yellow(change))
    with pytest.raises(ValueError, match="unknown fill form"):
        in_form(change, "green")


def test_block_constant_keeps_each_squares_mean_shape_and_energy():
    from fastprotect.generator import block_constant

    change = torch.randn(2, 3, 20, 13, generator=torch.Generator().manual_seed(3))
    squares = block_constant(change, 8)
    assert squares.shape == change.shape
    scale = change.pow(2).flatten(1).mean(1).sqrt() / squares.pow(2).flatten(1).mean(1).sqrt()
    assert torch.allclose(scale, torch.ones(2), atol=1e-5)  # each image's energy restored
    for top, left in itertools.product((0, 8, 16), (0, 8)):  # squares from the top-left corner; the border ones are cut
        cell = squares[..., top:top + 8, left:left + 8]
        assert torch.allclose(cell, cell[..., :1, :1].expand_as(cell))
    restored = squares / squares.pow(2).flatten(1).mean(1).sqrt().view(-1, 1, 1, 1)
    means = [change[..., 16:20, 8:13].mean((-2, -1)), change[..., :8, :8].mean((-2, -1))]  # a cut square averages what it holds
    ratio = restored[..., 16, 8] / means[0]
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
    assert torch.allclose(restored[..., 0, 0] / means[1], ratio, rtol=1e-4)
    assert torch.equal(block_constant(change, 1), change) and torch.equal(block_constant(change, 0), change)


def test_a_lifted_image_can_change_in_8_pixel_squares_on_jpegs_grid_and_still_reaches_its_minimum():
    """fill_block 8: a lifted image's δ is constant over the 8×8 squares JPEG cuts from the top-left corner, along the
    blue difference only, at the minimum energy; an image above the minimum keeps its pixel detail. fill_block 0 (the
    default) keeps the lift's pixel detail."""
    assert GeneratorConfig().fill_block == 0
    fixed = dummy_generator(mask_floor=0.05, contrast_reference=0.06, rms_levels=3.5)
    lifted = fixed.with_config(fill_rms_levels=2.5, fill_floor_max=1.0, fill_block=8)
    images = torch.cat([mostly_flat_image(size=60), half_flat_image(60, 60, seed=1)])  # 60: the last squares are cut
    with torch.no_grad():
        delta, before, detailed = lifted.perturbation(images), fixed.perturbation(images), \
            lifted.with_config(fill_block=0).perturbation(images)
    for top, left in itertools.product(range(0, 60, 8), repeat=2):
        cell = delta[0, :, top:top + 8, left:left + 8]
        assert torch.allclose(cell, cell[:, :1, :1].expand_as(cell), atol=1e-7)
    assert (delta[0, 2, :, 1:] != delta[0, 2, :, :-1]).any()  # not one flat shift: the squares differ
    cb_of_rgb, y_of_rgb = torch.tensor([-0.168736, -0.331264, 0.5]), torch.tensor([0.299, 0.587, 0.114])
    assert torch.einsum("c,chw->hw", y_of_rgb, delta[0]).abs().max() < 1e-6
    assert torch.einsum("c,chw->hw", cb_of_rgb, delta[0]).abs().max() > 1 / 255
    # the squares keep the energy; scaling peaks back to ±η afterwards takes a little off (here, with a floor up to 1)
    assert 0.9 * 2.5 < float(rms_levels(delta)[0]) <= 2.5 * 1.02 and delta.abs().max() <= fixed.config.eta + 1e-7
    assert torch.equal(delta[1], before[1])  # not lifted: untouched
    step = (detailed[0, :, :, 1:] - detailed[0, :, :, :-1]).abs()
    assert step.reshape(3, 60, 59)[:, :, [i for i in range(59) if i % 8 != 7]].max() > 0.1 / 255  # pixel detail inside the squares


def test_the_lifted_floor_stops_at_its_ceiling():
    model = dummy_generator(mask_floor=0.05, contrast_reference=0.06, rms_levels=3.5)
    image = mostly_flat_image()
    c = model.config
    with torch.no_grad():
        raw = model.raw(image)
    relative = torch.zeros(1, 1, 64, 64)  # perfectly flat: δ = η·f·raw, its RMS grows linearly with f
    floors = fill_floor(relative, raw, floor=0.05, ceiling=0.2, gamma=1.0, target_rms=3.0 / 255 / c.eta)
    assert floors.tolist() == [pytest.approx(0.2)]
    unreachable_at = float(0.2 * raw.pow(2).mean().sqrt()) * c.eta * 255
    assert unreachable_at < 3.0  # the premise: even the ceiling stays below the minimum
    found = fill_floor(relative, raw, floor=0.05, ceiling=1.0, gamma=1.0, target_rms=unreachable_at / 255 / c.eta)
    assert found.tolist() == [pytest.approx(0.2, rel=1e-3)]


def test_the_minimum_energy_is_off_in_older_configs_and_bounded_by_the_cap(tmp_path):
    folder = dummy_generator().save_pretrained(tmp_path / "gen")
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 7 and config["fill_form"] == "blue-yellow" and config["fill_block"] == 0
    for name in ("fill_rms_levels", "fill_floor_max", "fill_form", "fill_block"):
        del config[name]
    (folder / "config.json").write_text(json.dumps(config | {"format_version": 2}))  # written before the fields existed
    older = PerturbationGenerator.from_pretrained(folder).config
    assert older.fill_rms_levels == 0 and older.fill_form == "blue-yellow"  # no minimum; one asked for later is today's
    assert older.fill_block == 0
    # version 3 had the minimum, lifted in brightness and colour: kept as it was measured
    (folder / "config.json").write_text(json.dumps(config | {"format_version": 3, "fill_rms_levels": 2.5, "fill_floor_max": 0.5}))
    three = PerturbationGenerator.from_pretrained(folder).config
    assert three.fill_rms_levels == 2.5 and three.fill_form == "both" and three.fill_block == 0
    # version 4 named its form with a boolean: true was colour only, false brightness and colour
    for flag, form in ((True, "colour"), (False, "both")):
        (folder / "config.json").write_text(json.dumps(config | {"format_version": 4, "fill_rms_levels": 2.5, "fill_floor_max": 0.5,
                                                                 "fill_colour_only": flag}))
        four = PerturbationGenerator.from_pretrained(folder).config
        assert four.fill_form == form and four.fill_block == 0
    (folder / "config.json").write_text(json.dumps(config | {"format_version": 4, "fill_rms_levels": 2.5, "fill_floor_max": 0.5,
                                                             "fill_colour_only": "yes"}))
    with pytest.raises(GeneratorCheckpointError, match="config.json: fill_colour_only must be true or false"):
        PerturbationGenerator.from_pretrained(folder)
    # version 5 lifted with G's pixel detail
    (folder / "config.json").write_text(json.dumps(config | {"format_version": 5, "fill_rms_levels": 2.5, "fill_floor_max": 0.5,
                                                             "fill_form": "blue-yellow"}))
    five = PerturbationGenerator.from_pretrained(folder).config
    assert five.fill_form == "blue-yellow" and five.fill_block == 0 and five.format_version == 7
    (folder / "config.json").write_text(json.dumps(config))  # version 7 must name them
    with pytest.raises(GeneratorCheckpointError, match="missing \\['fill_block', 'fill_floor_max', 'fill_form', 'fill_rms_levels'\\]"):
        PerturbationGenerator.from_pretrained(folder)
    for bad in (-1, 2.5, True, "8"):
        with pytest.raises(GeneratorCheckpointError, match="fill_block must be an integer ≥ 0"):
            GeneratorConfig(fill_block=bad)
    with pytest.raises(GeneratorCheckpointError, match="fill_form must be one of blue-yellow, colour, both"):
        GeneratorConfig(fill_form="colour only")
    with pytest.raises(GeneratorCheckpointError, match="fill_rms_levels"):
        GeneratorConfig(rms_levels=3.5, fill_rms_levels=4.0)
    with pytest.raises(GeneratorCheckpointError, match="fill_floor_max"):
        GeneratorConfig(fill_floor_max=1.5)


def test_the_protectors_budget_map_shows_the_lifted_floor():
    protector = dummy_protector(with_generator=True)
    protector.generator = protector.generator.with_config(mask_floor=0.05, contrast_reference=0.06, fill_rms_levels=2.5)
    result = protector.protect(mostly_flat_image(), compute_metrics=False)
    assert result.budget_map is not None and float(result.budget_map.min()) > 0.05


def test_the_shipped_generator_lifts_a_flat_drawing_and_the_minimum_can_be_changed_at_load_time_or_per_call(tmp_path, capsys):
    from fastprotect import cli
    from fastprotect.bundle import bundled_checkpoint_for
    from fastprotect.metrics import psnr

    shipped = bundled_checkpoint_for("generator")
    lifted = Protector.from_pretrained(shipped)  # on by default: 2.5 levels, written blue-yellow only
    assert lifted.generator.config.fill_rms_levels == 2.5 and lifted.generator.config.fill_form == "blue-yellow"
    with pytest.raises(ValueError, match="between 0 \\(off\\) and this checkpoint's energy cap, 3.5 levels"):
        Protector.from_pretrained(shipped, min_energy=5)
    with pytest.raises(ValueError, match="generator checkpoint only"):
        Protector.from_pretrained(bundled_checkpoint_for("mixture"), min_energy=2.5)
    # a flat-colour drawing: two fills (with room for a blue-yellow change) and an outline; the texture budget alone
    # leaves it nearly untouched
    drawing = torch.full((1, 3, 96, 96), 0.3)
    drawing[:, 0], drawing[:, 1], drawing[:, 1, 48:], drawing[..., 46:50, :] = 0.85, 0.2, 0.4, 0.1
    unlifted = Protector.from_pretrained(shipped, min_energy=0)
    assert unlifted.generator.config.fill_rms_levels == 0
    plain = unlifted.protect(drawing, compute_metrics=False).image
    stronger = lifted.protect(drawing, compute_metrics=False).image
    plain_db, stronger_db = float(psnr(plain, drawing)), float(psnr(stronger, drawing))
    assert plain_db > 43 and plain_db - 2 > stronger_db > 38, (plain_db, stronger_db)  # lifted: ≥ 2 dB more change, within the cap
    # or per call, on the protector already loaded (the Space's "Lift flat images" box): the same image
    assert torch.equal(unlifted.protect(drawing, compute_metrics=False, min_energy=2.5).image, stronger)
    assert torch.equal(lifted.protect(drawing, compute_metrics=False, min_energy=0).image, plain)
    # the command line reads it too, and an impossible value is one line, exit 2
    from PIL import Image

    Image.fromarray((drawing[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "drawing.png")
    assert cli.main([str(tmp_path / "drawing.png"), "-o", str(tmp_path / "out"), "--min-energy", "2.5"]) == 0
    assert cli.main([str(tmp_path / "drawing.png"), "-o", str(tmp_path / "out"), "--min-energy", "9"]) == 2
    err = capsys.readouterr().err
    assert "error: min_energy 9: must be between 0 (off)" in err and "Traceback" not in err


def test_protector_with_a_generator_keeps_size_budget_and_reports_its_method():
    protector = dummy_protector(with_generator=True)
    for height, width in ((37, 53), (64, 64)):
        image = half_flat_image(height, width)
        result = protector.protect(image, eta=eta_from_levels(6), compute_metrics=False)
        assert result.image.shape == image.shape
        assert result.info.linf_levels <= 6
        assert result.info.method == "generator" and result.info.mode == "pretrained"
        assert result.info.target == protector.generator.config.target and result.info.group is None
        assert "assign" not in result.info.timings_s  # no encoder runs to protect
        assert result.perturbation.abs().sum() > 0


def test_the_psnr_floor_of_the_energy_cap_holds_after_rounding():
    protector = dummy_protector(with_generator=True)
    image = half_flat_image(96, 96, seed=3)
    result = protector.protect(image, compute_metrics=True)
    floor = psnr_floor_db(protector.generator.config)
    # rounding to 8 bits can add up to half a level per value: allow 0.5 dB below the cap's floor
    assert result.info.psnr_db >= floor - 0.5


def test_large_images_run_the_network_on_a_working_copy():
    protector = dummy_protector(with_generator=True)
    protector.generator = PerturbationGenerator(GeneratorConfig(**{**protector.generator.config.__dict__, "work_size": 32})).eval()
    protector.generator.load_state_dict(dummy_generator().state_dict())
    seen: list[tuple[int, int]] = []
    net = protector.generator.net
    handle = net.register_forward_pre_hook(lambda module, inputs: seen.append(tuple(inputs[0].shape[-2:])))
    try:
        result = protector.protect(half_flat_image(64, 128), compute_metrics=False)
    finally:
        handle.remove()
    assert seen == [(16, 32)]
    assert result.image.shape[-2:] == (64, 128)


def test_a_downscaled_network_sees_a_shrunk_copy_and_writes_a_smooth_full_size_pattern():
    full = dummy_generator()
    half = full.with_config(net_downscale=2)
    seen: list[tuple[int, int]] = []
    handle = half.net.register_forward_pre_hook(lambda module, inputs: seen.append(tuple(inputs[0].shape[-2:])))
    image = half_flat_image(64, 96)
    with torch.no_grad():
        try:
            delta = half.perturbation(image)
        finally:
            handle.remove()
        sharp = full.raw(image)
        smooth = half.raw(image)
    assert seen == [(32, 48)]
    assert delta.shape == image.shape and delta.abs().max() <= half.config.eta + 1e-6
    # upsampled from half size: neighbouring pixels differ far less than in the full-resolution pattern
    def step(pattern: torch.Tensor) -> float:
        return float((pattern[..., 1:] - pattern[..., :-1]).abs().mean())
    assert step(smooth) < 0.6 * step(sharp)
    # a training crop's target window (full size) is shrunk with the image
    with torch.no_grad():
        assert half.perturbation(image, target=half.target(64, 96)).shape == image.shape


def test_a_version_1_config_loads_as_a_full_resolution_network(tmp_path):
    folder = dummy_generator().save_pretrained(tmp_path / "gen")
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 7 and config["net_downscale"] == 1
    del config["net_downscale"]
    (folder / "config.json").write_text(json.dumps(config | {"format_version": 1}))
    assert PerturbationGenerator.from_pretrained(folder).config.net_downscale == 1
    (folder / "config.json").write_text(json.dumps(config))  # the current version must name it
    with pytest.raises(GeneratorCheckpointError, match="missing \\['net_downscale'\\]"):
        PerturbationGenerator.from_pretrained(folder)
    with pytest.raises(GeneratorCheckpointError, match="net_downscale"):
        GeneratorConfig(net_downscale=0)


def test_save_and_load_round_trip_and_from_pretrained_dispatches_on_the_method(tmp_path, monkeypatch):
    model = dummy_generator(encoder_kind="taef2")
    folder = model.save_pretrained(tmp_path / "gen", card="# card\n")
    assert json.loads((folder / "config.json").read_text())["method"] == "generator"
    loaded = PerturbationGenerator.from_pretrained(folder)
    image = half_flat_image()
    with torch.no_grad():
        assert torch.equal(loaded.perturbation(image), model.perturbation(image))
    # Protector.from_pretrained reads the method from config.json; the encoder comes from the argument.
    import fastprotect.protect as protect_module

    monkeypatch.setattr(protect_module, "load_autoencoder", lambda *a, **k: dummy_autoencoder("taef2"))
    monkeypatch.setattr("fastprotect.perceptual.load_perceptual", lambda *a, **k: None)
    protector = Protector.from_pretrained(folder, encoder_source=str(tmp_path))
    assert protector.method == "generator" and protector.mixture is None


def test_a_malformed_generator_checkpoint_is_a_one_line_error(tmp_path):
    folder = dummy_generator().save_pretrained(tmp_path / "gen")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"width": 16}))
    with pytest.raises(GeneratorCheckpointError, match="shape"):
        PerturbationGenerator.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config | {"colour": "red"}))
    with pytest.raises(GeneratorCheckpointError, match="unexpected \\['colour'\\]"):
        PerturbationGenerator.from_pretrained(folder)
    with pytest.raises(GeneratorCheckpointError, match="mask_floor"):
        GeneratorConfig(mask_floor=1.5)


def test_protected_png_round_trip_keeps_the_budget(tmp_path):
    from PIL import Image

    protector = dummy_protector(with_generator=True)
    image = half_flat_image(40, 72)
    source = tmp_path / "in.png"
    Image.fromarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(source)
    loaded = load_image(source)
    result = protector.protect(loaded, eta=eta_from_levels(8), compute_metrics=False)
    path = tmp_path / "p.png"
    path.write_bytes(png_bytes(loaded, result.image))
    reread = load_image(path).pixels
    assert int(((reread - image).abs().max() * 255).round()) <= 8


def trainer_folder(tmp_path, monkeypatch, domain: str, count: int):
    """A training folder of ``count`` random 48² images under ``domain``, the trainer's encoder a
    small dummy VAE: the setup of every trainer test. Returns the folder's root."""
    from PIL import Image

    data = tmp_path / "data" / domain
    data.mkdir(parents=True)
    for index in range(count):
        pixels = (torch.rand(48, 48, 3, generator=torch.Generator().manual_seed(index)) * 255).byte().numpy()
        Image.fromarray(pixels).save(data / f"{domain[0]}{index}.png")
    monkeypatch.setattr("fastprotect.encoders.load_autoencoder", lambda *a, **k: dummy_autoencoder("sd-vae"))
    return tmp_path / "data"


def test_the_trainer_runs_resumes_and_writes_a_loadable_generator(tmp_path, monkeypatch):
    import train.generator as trainer

    data = trainer_folder(tmp_path, monkeypatch, "painting", 3)
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--batch", "2", "--crop", "32", "--load-size", "48",
              "--width", "8", "--blocks", "1", "--save-every", "2", "--log-every", "1"]
    assert trainer.main([*common, "--steps", "2"]) == 0
    assert trainer.main([*common, "--steps", "3", "--resume"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3]
    assert all(math.isfinite(record["loss"]) for record in log)
    assert log[2]["elapsed_s"] >= log[1]["elapsed_s"]  # the resumed run's clock goes on from the snapshot's
    assert PerturbationGenerator.from_pretrained(out / "generator").config.width == 8
    exported = tmp_path / "export"
    assert trainer.main(["export", "--run", str(out), "--output", str(exported)]) == 0
    card = (exported / "README.md").read_text()
    assert "3 steps" in card and "batch 2" in card and "32² crops" in card
    assert {"taef2.safetensors", "alexnet_lpips_features.safetensors", "LICENSE.taef2", "LICENSE.lpips"} <= {f.name for f in exported.iterdir()}
    assert PerturbationGenerator.from_pretrained(exported).config == PerturbationGenerator.from_pretrained(out / "generator").config


def test_trainer_transforms_keep_shape_and_range():
    import train.generator as trainer

    images = torch.rand(2, 3, 40, 40)
    for name, params in (("resize", {"scale": 0.5}), ("blur", {"sigma": 0.7}), ("noise", {"sigma": 0.01, "seed": 1}),
                         ("jpeg", {"quality": 60.0}), ("identity", {})):
        out = trainer.apply_transform(images, name, params)
        assert out.shape == images.shape
        assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert not torch.equal(trainer.apply_transform(images, "blur", {"sigma": 0.7}), images)


def test_the_training_jpeg_is_close_to_a_real_jpeg_codec_and_passes_gradients():
    """The simulated JPEG must lose what Pillow's JPEG loses (much closer to the codec's output than
    the input is), or training for robustness to it means nothing; and gradients must reach δ."""
    import io

    from PIL import Image

    import train.generator as trainer

    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    smooth = torch.stack([yy, xx, (yy + xx) / 2])[None]
    texture = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.3
    image = ((smooth * 0.7 + texture).clamp(0, 1) * 255).round() / 255
    buffer = io.BytesIO()
    Image.fromarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(buffer, "JPEG", quality=60)
    codec = torch.from_numpy(np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    delta = torch.zeros_like(image, requires_grad=True)
    simulated = trainer.apply_transform(image + delta, "jpeg", {"quality": 60.0})
    assert (simulated - codec).abs().mean() < 0.5 * (image - codec).abs().mean()
    simulated.sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0


def test_init_fine_tunes_from_a_checkpoint_and_the_card_says_so(tmp_path, monkeypatch):
    import train.generator as trainer

    data = trainer_folder(tmp_path, monkeypatch, "object", 2)
    start = PerturbationGenerator(GeneratorConfig(width=8, blocks=1, encoder_kind="sd-vae"))
    torch.nn.init.constant_(next(start.parameters()), 0.25)
    start.save_pretrained(tmp_path / "start")
    common = ["--data", str(data), "--out", str(tmp_path / "run"), "--batch", "2", "--crop", "32",
              "--load-size", "48", "--blocks", "1", "--steps", "1", "--lr", "1e-12"]
    with pytest.raises(SystemExit):  # another architecture cannot be the starting point
        trainer.main([*common, "--width", "16", "--init", str(tmp_path / "start")])
    assert trainer.main([*common, "--width", "8", "--init", str(tmp_path / "start")]) == 0
    tuned = PerturbationGenerator.from_pretrained(tmp_path / "run" / "generator")
    assert torch.allclose(next(tuned.parameters()), next(start.parameters()), atol=1e-6)  # lr ≈ 0: still the start
    assert trainer.main(["export", "--run", str(tmp_path / "run"), "--output", str(tmp_path / "export")]) == 0
    card = (tmp_path / "export" / "README.md").read_text()
    assert "initialised from" in card and "JPEG" in card


def test_init_can_grow_the_trunk_and_the_grown_network_writes_the_same_perturbation(tmp_path):
    import train.generator as trainer

    start = PerturbationGenerator(GeneratorConfig(width=8, blocks=2, encoder_kind="sd-vae")).eval()
    for parameter in start.parameters():  # a start that is not the identity anywhere
        torch.nn.init.normal_(parameter, std=0.2, generator=torch.Generator().manual_seed(1))
    deeper = PerturbationGenerator(GeneratorConfig(width=8, blocks=4, encoder_kind="sd-vae")).eval()
    trainer.grow_from(deeper, start)
    images = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(deeper(images), start(images))
    # the new blocks still learn: their first convolution is untouched, only the last starts at zero
    assert deeper.net.trunk[3].conv1.weight.abs().sum() > 0 and deeper.net.trunk[3].conv2.weight.abs().sum() == 0
    assert torch.equal(deeper.net.trunk[1].conv2.weight, start.net.trunk[1].conv2.weight)  # the old blocks are kept
    for shallower_or_wider in (GeneratorConfig(width=8, blocks=1, encoder_kind="sd-vae"),
                               GeneratorConfig(width=16, blocks=4, encoder_kind="sd-vae")):
        with pytest.raises(ValueError, match="same width"):
            trainer.grow_from(PerturbationGenerator(shallower_or_wider), start)


def test_the_network_copy_can_be_shrunk_in_training_and_at_export_and_the_card_says_so(tmp_path, monkeypatch):
    import train.generator as trainer

    data = trainer_folder(tmp_path, monkeypatch, "face", 2)
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--batch", "2", "--crop", "32", "--load-size", "48",
              "--width", "8", "--blocks", "1", "--steps", "1"]
    with pytest.raises(SystemExit):
        trainer.main([*common, "--net-downscale", "0"])
    assert trainer.main([*common, "--net-downscale", "2"]) == 0
    assert PerturbationGenerator.from_pretrained(out / "generator").config.net_downscale == 2
    exported = tmp_path / "export"
    assert trainer.main(["export", "--run", str(out), "--output", str(exported), "--net-downscale", "1"]) == 0
    assert PerturbationGenerator.from_pretrained(exported).config.net_downscale == 1
    card = (exported / "README.md").read_text()
    assert "trained with the network on a copy shrunk 2×; this folder shrinks it 1×" in card


def test_the_minimum_energy_can_be_trained_with_and_shipped_and_the_card_says_so(tmp_path, monkeypatch):
    import train.generator as trainer

    data = trainer_folder(tmp_path, monkeypatch, "face", 2)
    out = tmp_path / "run"
    assert trainer.main(["--data", str(data), "--out", str(out), "--batch", "2", "--crop", "32", "--load-size", "48",
                         "--width", "8", "--blocks", "1", "--steps", "1", "--rms-levels", "4", "--fill-rms-levels", "3"]) == 0
    assert PerturbationGenerator.from_pretrained(out / "generator").config.fill_rms_levels == 3
    exported = tmp_path / "export"
    assert trainer.main(["export", "--run", str(out), "--output", str(exported), "--fill-rms-levels", "2.5"]) == 0
    assert PerturbationGenerator.from_pretrained(exported).config.fill_rms_levels == 2.5
    card = (exported / "README.md").read_text()
    assert "minimum energy: an image whose δ stays below an RMS of 2.5 levels at η 8" in card and "blue difference only" in card
    assert "- minimum energy: trained with a minimum energy of 3 levels; this folder applies 2.5 levels" in card
    assert "squares" not in card  # the default lift keeps pixel detail
    from fastprotect.modelcard import generator_card
    squares = generator_card(GeneratorConfig(fill_rms_levels=2.5, fill_block=8), parameters=1)
    assert "no change of brightness Y or of Cr), and constant over 8×8-px squares counted from the top-left corner, JPEG's block grid" in squares
    with pytest.raises(SystemExit):  # above the energy cap: a one-line error, no folder half written
        trainer.main(["export", "--run", str(out), "--output", str(tmp_path / "bad"), "--fill-rms-levels", "5"])
    assert not (tmp_path / "bad").exists()


def test_the_jpeg_share_can_be_set_and_the_other_transforms_keep_their_proportions():
    import train.generator as trainer

    weights = trainer.transform_weights(0.5)
    jpeg = trainer.TRANSFORMS.index("jpeg")
    assert math.isclose(sum(weights), 1.0) and weights[jpeg] == 0.5
    others = [(w, d) for i, (w, d) in enumerate(zip(weights, trainer.TRANSFORM_WEIGHTS, strict=True)) if i != jpeg]
    assert all(math.isclose(w / d, others[0][0] / others[0][1]) for w, d in others)
    assert trainer.transform_weights() == trainer.TRANSFORM_WEIGHTS
    with pytest.raises(SystemExit):
        trainer.main(["--data", "x", "--out", "y", "--jpeg-weight", "1.5"])


def test_an_ensemble_of_encoders_trains_on_each_ones_own_pull_and_logs_them(tmp_path, monkeypatch, capsys):
    """--extra-encoder: the loss is the mean of every encoder's normalised pull (each in its own latent
    space), the log shows each, and a single encoder's loss is exactly the old one."""
    import train.generator as trainer
    from train.surrogate import SurrogateEncoder, make_surrogate, save_surrogate

    data = trainer_folder(tmp_path, monkeypatch, "cartoon", 2)
    torch.manual_seed(0)
    net = make_surrogate((8, 8, 8), 1)
    save_surrogate(net, tmp_path / "standin", {"widths": [8, 8, 8], "blocks": 1})
    standin = SurrogateEncoder(net, (8, 8, 8))
    main_encoder = dummy_autoencoder("sd-vae").encoder
    x, pattern = torch.rand(2, 3, 32, 32), torch.rand(1, 3, 32, 32)
    protected = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    alone = trainer.ensemble_pull([main_encoder], protected, x, pattern, 1.0)
    with torch.no_grad():
        expected = trainer.normalised_pull(main_encoder(protected), main_encoder(x), main_encoder(pattern), 1.0).mean()
    assert alone.shape == (1,) and torch.allclose(alone[0], expected)
    both = trainer.ensemble_pull([main_encoder, standin], protected, x, pattern, 1.0)
    assert both.shape == (2,) and torch.allclose(both[0], alone[0]) and not torch.allclose(both[1], both[0])

    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--batch", "2", "--crop", "32", "--load-size", "48",
              "--width", "8", "--blocks", "1", "--steps", "2", "--log-every", "1"]
    assert trainer.main([*common, "--extra-encoder", str(tmp_path / "standin")]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(len(r["loss_per_encoder"]) == 2 for r in log)
    assert all(math.isclose(r["loss"], sum(r["loss_per_encoder"]) / 2, rel_tol=1e-4) for r in log)
    assert json.loads((out / "train_info.json").read_text())["args"]["extra_encoder"] == [str(tmp_path / "standin")]
    for bad in (str(tmp_path / "nothing-here"), "no-such-kind=somewhere"):
        with pytest.raises(SystemExit):
            trainer.main([*common, "--out", str(tmp_path / "bad"), "--extra-encoder", bad])
        assert "Traceback" not in capsys.readouterr().err


def test_the_cosine_schedule_falls_from_the_rate_to_zero_and_the_log_shows_each_steps_rate(tmp_path, monkeypatch):
    import train.generator as trainer

    assert trainer.learning_rate(0, 100, 1e-3, "cosine") == pytest.approx(1e-3)
    assert trainer.learning_rate(50, 100, 1e-3, "cosine") == pytest.approx(5e-4)
    assert trainer.learning_rate(100, 100, 1e-3, "cosine") == pytest.approx(0, abs=1e-12)
    rates = [trainer.learning_rate(s, 100, 1e-3, "cosine") for s in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert trainer.learning_rate(70, 100, 1e-3) == 1e-3  # constant is the default
    with pytest.raises(ValueError):
        trainer.learning_rate(0, 10, 1e-3, "linear")

    data = trainer_folder(tmp_path, monkeypatch, "painting", 2)
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--batch", "2", "--crop", "32", "--load-size", "48",
              "--width", "8", "--blocks", "1", "--log-every", "1", "--save-every", "2", "--lr", "1e-3", "--lr-schedule", "cosine"]
    assert trainer.main([*common, "--steps", "2"]) == 0
    # resumed with more steps, the run goes on along the longer schedule from where it stopped
    assert trainer.main([*common, "--steps", "4", "--resume"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    expected = [trainer.learning_rate(s, 2, 1e-3, "cosine") for s in (0, 1)] + [trainer.learning_rate(s, 4, 1e-3, "cosine") for s in (2, 3)]
    assert [r["lr"] for r in log] == pytest.approx(expected)


def test_the_generator_trainers_defaults_are_the_configs():
    """python -m train.generator with no network or budget option trains the default GeneratorConfig."""
    import train.generator as trainer

    args = trainer.build_parser().parse_args(["--data", "x", "--out", "y"])
    default = GeneratorConfig()
    for name in ("width", "blocks", "rms_levels", "contrast_reference", "mask_floor", "mask_gamma", "fill_rms_levels",
                 "fill_floor_max", "net_downscale", "target", "encoder_kind"):
        assert getattr(args, name) == getattr(default, name), name
    assert eta_from_levels(args.eta_levels) == default.eta


# ------------------------------------------------------------------------------ the banded inference path (issue 31)
def _protected_as_before(model: PerturbationGenerator, images: torch.Tensor, eta: float) -> torch.Tensor:
    """The protected image as the library made it before the banded path (commit b19dcf0), written out here from its
    formula so that the comparison does not lean on the code under test: local contrast by 7×7 average pooling of the
    reflect-padded luma, G's pattern upsampled whole by F.interpolate, the floor lifted on a strided subsample, δ capped
    to its RMS, then x + δ rounded to 8 bits within ±η."""
    import torch.nn.functional as F

    from fastprotect.generator import _floored, write_lift
    from fastprotect.metrics import luma
    from fastprotect.strength import quantise_within_budget

    c = model.config
    pad = c.contrast_window // 2
    padded = F.pad(luma(images), (pad, pad, pad, pad), mode="reflect")
    mean, mean_sq = (F.avg_pool2d(t, c.contrast_window, stride=1) for t in (padded, padded * padded))
    relative = (mean_sq - mean * mean).clamp_min(0).sqrt() / c.contrast_reference
    raw = F.interpolate(model.small_pattern(images), size=images.shape[-2:], mode="bilinear", align_corners=False)
    floor: float | torch.Tensor = c.mask_floor
    if c.fill_rms_levels > 0:
        floor = fill_floor(relative, raw, floor=c.mask_floor, ceiling=c.fill_floor_max, gamma=c.mask_gamma,
                           target_rms=c.fill_rms_levels / 255 / c.eta, form=c.fill_form)
    delta = eta * _floored(relative, floor).pow(c.mask_gamma) * raw
    if isinstance(floor, torch.Tensor) and bool((floor > c.mask_floor).any()):
        delta = torch.where((floor > c.mask_floor).view(-1, 1, 1, 1), write_lift(delta, c.fill_form, c.fill_block, eta), delta)
    delta = cap_energy(delta, c.rms_levels / 255 * eta / c.eta).clamp(-eta, eta)
    return quantise_within_budget(images, (images + delta).clamp(0, 1), eta)


@pytest.mark.parametrize("form", ["blue-yellow", "colour", "both"])
@pytest.mark.parametrize("height, width", [(37, 53), (96, 96), (300, 517), (1030, 777)])
def test_the_banded_path_protects_as_the_plain_one_did_within_one_level(height, width, form):
    """PerturbationGenerator.protect_image (bands, δ written into the output, cap and rounding in place) against the
    formula it replaced: every pixel within one 8-bit level, nearly all equal, on textured and nearly flat (lifted)
    images, odd sizes, several bands and a network copy smaller than the image."""
    model = dummy_generator(mask_floor=0.05, contrast_reference=0.06, rms_levels=3.5, fill_rms_levels=2.5,
                            fill_form=form, work_size=512, net_downscale=2)
    eta = eta_from_levels(8)
    lifted = 0
    for image in (half_flat_image(height, width, seed=3), mostly_flat_image(max(height, width))[..., :height, :width]):
        with torch.no_grad():
            before = _protected_as_before(model, image, eta)
            lifted += int(float(model.budget(image, model.raw(image)).min()) > 0.05)
        after, budget = model.protect_image(image, eta)
        # the CLI's form: the image as 8-bit levels in, uint8 levels out, no map kept — the very same pixels
        as_levels, no_map = model.protect_image((image * 255).round().to(torch.uint8), eta, levels=True, keep_budget=False)
        assert as_levels.dtype == torch.uint8 and no_map is None and torch.equal(as_levels, (after * 255).round().to(torch.uint8))
        levels = ((after - before).abs() * 255).round()
        assert after.shape == image.shape and budget.shape == (1, 1, height, width)
        assert float(levels.max()) <= 1 and float((levels == 0).float().mean()) >= 0.999, (float(levels.max()), float((levels == 0).float().mean()))
        assert torch.equal((after * 255).round() / 255, after)  # on the 8-bit grid
        assert float((after - image).abs().max()) <= eta + 1e-6
    assert lifted >= 1  # the nearly flat image at least went through the minimum energy's lift


def test_the_banded_local_contrast_is_the_pooled_one():
    from fastprotect.metrics import _pooled_local_contrast, local_contrast

    generator = torch.Generator().manual_seed(5)
    for shape, window in (((2, 3, 37, 53), 7), ((1, 3, 4, 9), 7), ((1, 3, 600, 41), 9), ((1, 3, 513, 300), 5)):
        images = (torch.rand(shape, generator=generator) * 255).round() / 255
        assert torch.allclose(local_contrast(images, window), _pooled_local_contrast(images, window), atol=3e-6)


def test_the_banded_relative_contrast_is_the_whole_image_one_bit_for_bit():
    """protect_image computes the local contrast band by band with the window's rows around each band (from 8-bit
    levels converted per band): the very numbers of one call on the whole float image, at the top and bottom edges
    (reflection) too, for band heights down to a single row past a band."""
    from fastprotect.generator import relative_contrast

    model = dummy_generator()
    c = model.config
    generator = torch.Generator().manual_seed(11)
    for height, width, band_rows in ((300, 517, 256), (257, 40, 256), (100, 33, 16), (9, 12, 4)):
        levels = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=generator)
        expected = relative_contrast(levels.float() / 255, c.contrast_reference, c.contrast_window)
        for images in (levels, levels.float() / 255):
            assert torch.equal(model._banded_relative_contrast(images, band_rows, whole_floats=False), expected), (height, width, band_rows)


def test_the_first_pass_result_is_the_two_pass_one_whether_the_cap_acts_or_not(monkeypatch):
    """protect_image writes its result in its first pass when it guesses the energy cap will not act; a wrong guess
    costs a second pass, never a different image: always guessing and never guessing give the same pixels, for an
    image the cap scales (textured) and one it leaves alone (flat, lifted)."""
    import fastprotect.generator as generator_module

    model = dummy_generator(mask_floor=0.05, contrast_reference=0.06, rms_levels=3.5, fill_rms_levels=2.5, work_size=512, net_downscale=2)
    eta = eta_from_levels(8)
    for image in (half_flat_image(300, 517, seed=4), mostly_flat_image(517)[..., :300, :]):
        levels = (image * 255).round().to(torch.uint8)
        results = []
        for share in (0.0, 1e9):  # never, always
            monkeypatch.setattr(generator_module, "_SPECULATE_BELOW", share)
            results.append(model.protect_image(levels, eta, levels=True, band_rows=64)[0])
        assert torch.equal(*results)
