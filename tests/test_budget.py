"""fastprotect.budget: the budget rules for the eye (edges are not texture, no tint on neutral areas) and the lift's
"flat" criterion, and how a generator config turns them on (format 7; older configs read as before)."""

from __future__ import annotations

import json

import pytest
import torch

from fastprotect import budget
from fastprotect.dummy import dummy_generator
from fastprotect.generator import GeneratorCheckpointError, GeneratorConfig, PerturbationGenerator
from fastprotect.metrics import luma


def _edge_image(size: int = 32) -> torch.Tensor:
    """A grey image with one vertical black line: an isolated edge (a cartoon outline)."""
    image = torch.full((1, 3, size, size), 0.7)
    image[..., size // 2 - 1 : size // 2 + 1] = 0.0
    return image


def _texture_image(size: int = 32) -> torch.Tensor:
    """Grey random texture: gradients of every orientation."""
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0)).expand(1, 3, size, size).clone()


def test_an_isolated_line_is_coherent_and_texture_is_not() -> None:
    line, texture = budget.edge_coherence(_edge_image(), 7), budget.edge_coherence(_texture_image(), 7)
    assert float(line[0, 0, 16, 15]) > 0.95  # on the line: one orientation
    assert float(texture[0, 0, 8:24, 8:24].median()) < 0.5
    assert float(line[0, 0, 16, 2]) == 0.0  # far from the line the grey is flat: no structure, no coherence


def test_edge_damping_takes_budget_off_edges_and_leaves_texture_most_of_it() -> None:
    on_line = float(budget.edge_damping(_edge_image(), 7, 0.8)[0, 0, 16, 15])
    texture = budget.edge_damping(_texture_image(), 7, 0.8)[0, 0, 8:24, 8:24]
    assert on_line < 0.3
    assert float(texture.median()) > 0.9
    assert torch.equal(budget.edge_damping(_edge_image(), 7, 0.0), torch.ones(1, 1, 32, 32))  # off: no change


def test_hide_colour_keeps_brightness_and_removes_tints_on_grey_but_not_on_saturated_colour() -> None:
    grey = torch.full((1, 3, 16, 16), 0.5)
    red = torch.zeros(1, 3, 16, 16)
    red[:, 0] = 0.9
    delta = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.02
    on_grey, on_red = budget.hide_colour(delta, grey, 0.25, 7), budget.hide_colour(delta, red, 0.25, 7)
    assert torch.allclose(luma(on_grey), luma(delta), atol=1e-6) and torch.allclose(luma(on_red), luma(delta), atol=1e-6)
    assert torch.allclose(on_grey, luma(delta).expand_as(delta), atol=1e-6)  # grey: brightness only, every channel alike
    assert torch.allclose(on_red, delta, atol=1e-6)  # a saturated red (chroma 0.5 > 0.25) keeps all of δ
    assert torch.equal(budget.hide_colour(delta, grey, 0.0, 7), delta)  # 0: off


def test_the_fill_beside_a_black_outline_counts_as_neutral() -> None:
    image = torch.zeros(1, 3, 16, 16)
    image[:, 0] = 0.9  # a red fill ...
    image[..., 8] = 0.0  # ... with a black outline down column 8
    chroma = budget.local_chroma(image, 7)
    assert float(chroma[0, 0, 8, 10]) == 0.0 and float(chroma[0, 0, 8, 1]) > 0.4


def test_flat_rms_ignores_the_energy_on_outlines() -> None:
    relative = torch.zeros(1, 1, 10, 10)
    relative[..., :2] = 2.0  # two textured columns (outlines), eight flat ones
    delta = torch.zeros(1, 3, 10, 10)
    delta[..., :2] = 0.03  # all of δ on the outlines: its RMS over the image is not small ...
    assert float(delta.pow(2).mean().sqrt()) > 0.01
    assert float(budget.flat_rms(delta, relative)[0]) == 0.0  # ... but the fills got nothing
    assert float(budget.flat_share(relative)[0]) == pytest.approx(0.8)


def test_the_flat_criterion_lifts_an_outlined_cartoon_that_the_rms_criterion_leaves_alone() -> None:
    torch.manual_seed(0)
    image = torch.full((1, 3, 64, 64), 0.8)
    image[:, 1:, :, :] = 0.3  # a flat red-ish fill
    for column in range(4, 64, 16):
        image[..., column] = 0.0  # dense black outlines: δ's energy sits on them
    by_rms = dummy_generator().with_config(fill_rms_levels=2.5, mask_floor=0.05)
    by_flat = by_rms.with_config(fill_criterion="flat", fill_flat_share=0.25)
    raw = torch.ones(1, 3, 64, 64) * 0.9  # a strong pattern everywhere: the outlines alone clear the whole-image bar
    assert not bool(by_rms._budget_and_lift(image, raw, 2.5)[1][0])
    budget_map, lifted = by_flat._budget_and_lift(image, raw, 2.5)
    assert bool(lifted[0]) and float(budget_map[..., 1:3].min()) > 0.05  # the fills' floor was raised


def test_format_6_configs_read_with_every_new_rule_off_and_bad_values_are_one_line_errors(tmp_path) -> None:
    folder = dummy_generator().save_pretrained(tmp_path / "gen")
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 7
    for name in ("fill_criterion", "fill_flat_share", "edge_suppression", "chroma_reference"):
        del config[name]
    (folder / "config.json").write_text(json.dumps(config | {"format_version": 6}))
    older = PerturbationGenerator.from_pretrained(folder).config
    assert (older.fill_criterion, older.edge_suppression, older.chroma_reference) == ("rms", 0.0, 0.0)
    for bad in ({"fill_criterion": "coverage"}, {"edge_suppression": 1.5}, {"chroma_reference": -0.1}, {"fill_flat_share": 2}):
        with pytest.raises(GeneratorCheckpointError, match=next(iter(bad))):
            GeneratorConfig(**bad)


def test_rules_off_give_the_same_delta_as_before_and_on_change_only_what_they_name() -> None:
    generator = dummy_generator().with_config(rms_levels=255.0)  # no energy cap: it would rescale δ after the rules
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    image[..., :24, :] = 0.5  # a grey half
    before = generator.perturbation(image)
    assert torch.equal(generator.with_config(edge_suppression=0.0, chroma_reference=0.0).perturbation(image), before)
    hidden = generator.with_config(chroma_reference=0.25).perturbation(image)
    assert torch.allclose(luma(hidden), luma(before), atol=1e-6)  # brightness kept
    grey_colour = (hidden - luma(hidden))[..., 4:20, :]
    assert float(grey_colour.abs().max()) < 1e-6 < float((before - luma(before))[..., 4:20, :].abs().max())


def test_a_checkpoint_with_a_budget_rule_on_protects_through_the_plain_path_that_applies_it() -> None:
    """protect_image (the banded inference path) hands over to perturbation_and_budget whenever a rule is on: the
    rules need whole-image neighbourhoods, and silently skipping them would ship a checkpoint's output unhidden."""
    from fastprotect.images import resize_tensor
    from fastprotect.strength import compose_

    torch.manual_seed(1)
    image = (torch.rand(1, 3, 72, 90) * 255).round() / 255
    eta = 8 / 255
    for rules in ({"edge_suppression": 0.8}, {"chroma_reference": 0.05}, {"fill_criterion": "flat", "fill_rms_levels": 2.5}):
        model = dummy_generator().with_config(**rules)
        with torch.no_grad():
            pattern = model.small_pattern(image)
            delta, budget_map = model.perturbation_and_budget(image, eta, raw=resize_tensor(pattern, 72, 90))
            expected = compose_(image.clone(), delta.clamp(-eta, eta), eta)
        protected, shown = model.protect_image(image, eta, pattern=pattern)
        assert torch.equal(protected, expected) and torch.equal(shown, budget_map), rules
