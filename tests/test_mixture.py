"""MixtureOfPerturbations: routing, budget and strict save/load (fastprotect.mixture)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from fastprotect.mixture import CheckpointError, MixtureConfig, MixtureOfPerturbations


def _mixture(size: int = 16) -> MixtureOfPerturbations:
    torch.manual_seed(0)
    mixture = MixtureOfPerturbations(MixtureConfig(size=size, latent_channels=4, encoder_kind="taesd", encoder_source="x"))
    with torch.no_grad():
        mixture.global_perturbations.uniform_(-1, 1)
        mixture.group_perturbations.uniform_(-1, 1)
        mixture.centroids.normal_()
        mixture.target_signatures.uniform_()
    mixture.project_()
    return mixture


def test_projection_keeps_each_part_within_half_budget_and_sum_within_budget():
    mixture = _mixture()
    eta = mixture.config.eta
    assert mixture.global_perturbations.abs().max() <= eta / 2 + 1e-7
    assert mixture.group_perturbations.abs().max() <= eta / 2 + 1e-7
    delta = mixture.perturbation(torch.tensor([0, 2]), torch.tensor([3, 1]))
    assert delta.shape == (2, 3, 16, 16)
    assert delta.abs().max() <= eta + 1e-7
    assert torch.equal(delta[1], mixture.global_perturbations[2] + mixture.group_perturbations[2, 1])


def test_assign_picks_the_nearest_centroid():
    mixture = _mixture()
    latents = torch.randn(5, 4, 8, 8)
    descriptors = mixture.descriptor(latents)
    with torch.no_grad():
        mixture.centroids.copy_(descriptors[:4])
    assert mixture.assign(latents[:4]).tolist() == [0, 1, 2, 3]


def test_layout_descriptor_reads_where_content_sits_and_channel_stats_do_not():
    left, right = torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8)
    left[..., :4], right[..., 4:] = 1.0, 1.0  # same values, mirrored placement
    layout = MixtureOfPerturbations(MixtureConfig(latent_channels=4, descriptor="layout-4x4"))
    stats = MixtureOfPerturbations(MixtureConfig(latent_channels=4))
    assert layout.descriptor(left).shape == (1, layout.config.descriptor_dim) == (1, 64)
    assert not torch.equal(layout.descriptor(left), layout.descriptor(right))
    assert torch.equal(stats.descriptor(left), stats.descriptor(right))
    assert layout.centroids.shape == (4, 64)


def test_unknown_descriptor_is_refused_at_config_and_load_time(tmp_path):
    with pytest.raises(CheckpointError, match="unknown descriptor"):
        MixtureConfig(descriptor="pixels")
    _mixture().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"descriptor": "pixels"}))
    with pytest.raises(CheckpointError, match="config.json: unknown descriptor"):
        MixtureOfPerturbations.from_pretrained(tmp_path)


def test_round_trip_through_save_pretrained(tmp_path):
    mixture = _mixture()
    mixture.save_pretrained(tmp_path)
    loaded = MixtureOfPerturbations.from_pretrained(tmp_path)
    assert loaded.config == mixture.config
    for name, tensor in mixture.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_fp16_checkpoint_loads_as_float32(tmp_path):
    mixture = _mixture()
    mixture.half().save_pretrained(tmp_path)
    loaded = MixtureOfPerturbations.from_pretrained(tmp_path)
    assert loaded.global_perturbations.dtype == torch.float32
    assert torch.allclose(loaded.global_perturbations, mixture.global_perturbations.float())


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_strict_loading_rejects_tampered_tensors(tmp_path, change):
    _mixture().save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    if change == "missing":
        del state["centroids"]
    elif change == "unexpected":
        state["extra"] = torch.zeros(1)
    else:
        state["centroids"] = torch.zeros(7, 8)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="centroids|extra"):
        MixtureOfPerturbations.from_pretrained(tmp_path)


def test_strict_loading_rejects_unknown_config_and_versions(tmp_path):
    _mixture().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "surprise": 1}))
    with pytest.raises(CheckpointError, match="surprise"):
        MixtureOfPerturbations.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        MixtureOfPerturbations.from_pretrained(tmp_path)


def test_missing_checkpoint_offline_is_a_clear_error(tmp_path):
    from fastprotect.hub import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError, match="local"):
        MixtureOfPerturbations.from_pretrained(tmp_path / "nowhere" / "repo")
