"""MixtureOfPerturbations: routing, budget, the config and its format versions, strict loading
through the Hub mixin (with every Hub option), and the model card of every save (fastprotect.mixture)."""

import json
from pathlib import Path

import huggingface_hub
import huggingface_hub.hub_mixin
import pytest
import torch
from safetensors.torch import load_file, save_file

from fastprotect.hub import WeightsUnavailableError
from fastprotect.mixture import FORMAT_VERSION, CheckpointError, MixtureConfig, MixtureOfPerturbations

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "taef2-mixture"


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
    with pytest.raises(WeightsUnavailableError, match="local"):
        MixtureOfPerturbations.from_pretrained(tmp_path / "nowhere" / "repo")


def test_an_unreachable_hub_repo_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match=r"someone/no-such-mixture.*FASTPROTECT_CHECKPOINT"):
        MixtureOfPerturbations.from_pretrained("someone/no-such-mixture")


def test_a_corrupt_config_is_a_checkpoint_error(tmp_path):
    _mixture().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable config"):
        MixtureOfPerturbations.from_pretrained(tmp_path)


# ------------------------------------------------------------------ the Hub mixin's options
HUB_OPTIONS = {"revision": "v2", "token": "hf_test", "cache_dir": "/tmp/hub-cache", "local_files_only": True, "force_download": True}


def test_hub_options_reach_hf_hub_download(tmp_path, monkeypatch):
    saved = tmp_path / "saved"
    _mixture().save_pretrained(saved)
    calls = []

    def fake_download(*, repo_id, filename, subfolder=None, **options):
        calls.append({"repo_id": repo_id, "filename": filename, **options})
        return str(saved / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)  # fastprotect.hub.resolve_file
    monkeypatch.setattr(huggingface_hub.hub_mixin, "hf_hub_download", fake_download)  # the mixin's own config fetch
    loaded = MixtureOfPerturbations.from_pretrained("someone/mixture", **HUB_OPTIONS)
    assert loaded.config == _mixture().config
    assert {call["filename"] for call in calls} == {"config.json", "model.safetensors"}
    for call in calls:
        assert call["repo_id"] == "someone/mixture"
        assert {name: call[name] for name in HUB_OPTIONS} == HUB_OPTIONS


def test_the_mixins_from_pretrained_loads_a_local_folder_without_the_hub(tmp_path, monkeypatch):
    def no_download(**_):
        raise AssertionError("a local folder must not touch the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(huggingface_hub.hub_mixin, "hf_hub_download", no_download)
    _mixture().save_pretrained(tmp_path)
    loaded = MixtureOfPerturbations.from_pretrained(str(tmp_path), **HUB_OPTIONS)  # options are ignored for folders
    assert loaded.config == _mixture().config and not loaded.training  # strict load, in eval mode


# ------------------------------------------------------------------ config format and fields
def test_a_version_1_config_is_migrated_when_read(tmp_path):
    mixture = MixtureOfPerturbations(MixtureConfig(size=16, encoder_kind="taef2", encoder_source="x", encoder_subfolder=None))
    mixture.save_pretrained(tmp_path)
    v2 = json.loads((tmp_path / "config.json").read_text())
    v1 = {k: v for k, v in v2.items() if k != "mimic_base"} | {"format_version": 1, "signature": "value-and-spectral-entropy"}
    (tmp_path / "config.json").write_text(json.dumps(v1))
    loaded = MixtureOfPerturbations.from_pretrained(tmp_path)
    assert loaded.config == mixture.config
    assert loaded.config.format_version == FORMAT_VERSION == 2 and loaded.config.mimic_base == "flux.2-klein"
    (tmp_path / "config.json").write_text(json.dumps(v1 | {"encoder_kind": "taesd"}))
    assert MixtureOfPerturbations.from_pretrained(tmp_path).config.mimic_base == "sd-1.5"
    (tmp_path / "config.json").write_text(json.dumps(v1 | {"signature": "pixel-histogram"}))
    with pytest.raises(CheckpointError, match="signature 'pixel-histogram' is not supported"):
        MixtureOfPerturbations.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in v1.items() if k != "signature"}))
    with pytest.raises(CheckpointError, match=r"format_version 1: missing \['signature'\]"):
        MixtureOfPerturbations.from_pretrained(tmp_path)


def test_the_bundled_checkpoint_loads_as_format_2():
    raw = json.loads((BUNDLED / "config.json").read_text())
    assert raw["format_version"] == 2 and "signature" not in raw and raw["mimic_base"] == "flux.2-klein"
    mixture = MixtureOfPerturbations.from_pretrained(BUNDLED)
    assert mixture.config.encoder_kind == "taef2" and mixture.config.mimic_base == "flux.2-klein"
    assert mixture.global_perturbations.dtype == torch.float32


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"encoder_kind": "vqgan"}, "unknown encoder_kind 'vqgan'"),
        ({"num_groups": 0}, "num_groups must be at least 1"),
        ({"size": 4}, "size must be at least 8"),
        ({"eta": 0.0}, "eta 0.0 is not a budget"),
        ({"eta": 33 / 255}, "is not a budget"),
        ({"mimic_base": "sdxl"}, "unknown mimic_base 'sdxl'"),
        ({"descriptor": "pixels"}, "unknown descriptor"),
        ({"format_version": 1}, "format_version 1 is not supported"),
        ({"num_targets": 2}, "num_targets must be 3"),
    ],
)
def test_config_values_are_validated(fields, message):
    with pytest.raises(CheckpointError, match=message):
        MixtureConfig(**fields)


def test_mimic_base_defaults_to_the_encoders_family():
    assert MixtureConfig(encoder_kind="taef2").mimic_base == "flux.2-klein"
    assert MixtureConfig(encoder_kind="sd-vae").mimic_base == "sd-1.5"
    assert MixtureConfig(encoder_kind="taef2", mimic_base="sd-1.5").mimic_base == "sd-1.5"


# ------------------------------------------------------------------------------ model card
def test_every_save_writes_a_real_model_card(tmp_path):
    mixture = _mixture()
    mixture.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "More Information Needed" not in card
    assert card.startswith("---\n") and "library_name: fastprotect" in card and "license: mit" in card
    for fact in ("`taesd` encoder", "mimic_base: sd-1.5", "8/255", "K = 4", "low, mid, high", "Protector.from_pretrained", "MIT"):
        assert fact in card, fact
    assert "| training | not recorded |" in card
    assert "## Evaluation" not in card and "## Training" not in card  # nothing known about either


def test_the_card_carries_training_and_evaluation_when_given_and_is_never_stale(tmp_path):
    mixture = _mixture()
    (tmp_path / "README.md").write_text("a card of other weights")
    record = {"steps": 20, "total_steps": 100, "batch_size": 4, "wall_time_s": 12.5, "hardware": "test CPU",
              "config": {"seed": 3, "lr_schedule": "constant"}}
    mixture.save_pretrained(tmp_path, model_card_kwargs={"training": record, "evaluation": "| method | LPIPS |\n|---|---|\n| full | 0.1 |"})
    card = (tmp_path / "README.md").read_text()
    assert "a card of other weights" not in card
    assert "20 of 100 steps (a snapshot taken during training), batch 4" in card and "seed 3" in card and "test CPU" in card
    assert "## Evaluation" in card and "| full | 0.1 |" in card


def test_push_to_hub_uploads_the_same_folder_with_its_card(tmp_path, monkeypatch):
    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **_):
            return type("Url", (), {"repo_id": repo_id})()

        def upload_folder(self, *, repo_id, folder_path, **_):
            uploaded.update({p.name: p.read_text() if p.suffix in (".md", ".json") else None for p in Path(folder_path).iterdir()})
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", FakeApi)
    _mixture().push_to_hub("someone/mixture", model_card_kwargs={"training": {"steps": 5}})
    assert set(uploaded) == {"config.json", "model.safetensors", "README.md"}
    assert json.loads(uploaded["config.json"])["format_version"] == 2 and "| training | 5 steps |" in uploaded["README.md"]
