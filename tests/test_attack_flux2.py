"""The FLUX.2 [klein] mimic on its tiny random stack: img2img (reference and SDEdit), the LoRA duel,
the VAE round trip, dispatch by family, and the offline failure. Plumbing, not efficacy."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from attack.cli import main
from attack.compare import to_pil
from attack.families import FAMILIES, family_spec, mimic_base
from attack.flux2 import Flux2EditSettings, edit_size, flux2_img2img, flux2_round_trip, load_flux2_pair, load_flux2_pipeline, load_flux2_vae
from attack.flux2_lora import FLUX2_LORA, FLUX2_SAMPLING, flux2_lora_duel, generate_flux2_samples, lora_target_names, train_flux2_lora
from attack.lora import remove_lora
from attack.mimic import family_img2img, family_lora_duel, family_round_trip, lora_settings, load_mimic
from fastprotect.hub import WeightsUnavailableError

SIZE = 64  # the pipeline's smallest reference image
TRAIN = replace(FLUX2_LORA, steps=3, resolution=SIZE, rank=4, learning_rate=1e-2, seed=0)
SAMPLE = replace(FLUX2_SAMPLING, count=2, steps=2, resolution=SIZE, seed=0)
EDIT = Flux2EditSettings(prompt="a painting", steps=2, seed=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small models: one thread is faster


@pytest.fixture
def pair():
    return load_flux2_pair(dummy=True, device="cpu", seed=0)


def _images(seed: int, count: int = 2) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE + 16, generator=torch.Generator().manual_seed(seed))


def _snapshot(*modules: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every base weight by its original name (peft renames a wrapped layer's weight to ``base_layer``)."""
    return {
        f"{index}.{name.replace('.base_layer', '')}": tensor.detach().clone()
        for index, module in enumerate(modules)
        for name, tensor in module.state_dict().items()
        if "lora_" not in name
    }


def test_family_vocabulary():
    assert FAMILIES == ("sd-1.5", "flux.2-klein")
    assert mimic_base("flux.2-klein") == "black-forest-labs/FLUX.2-klein-base-4B"
    assert family_spec("flux.2-klein").sample_id == "black-forest-labs/FLUX.2-klein-4B"
    assert family_spec("flux.2-klein").licence == "Apache-2.0" and family_spec("flux.2-klein").latent_channels == 32
    assert mimic_base("sd-1.5") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    with pytest.raises(ValueError, match="known: sd-1.5, flux.2-klein"):
        family_spec("sdxl")


@pytest.mark.parametrize("mode", ["reference", "sdedit"])
def test_img2img_returns_input_size_and_repeats(pair, mode):
    _, sampler = pair
    generator = torch.Generator().manual_seed(0)
    odd = torch.rand(1, 3, 50, 70, generator=generator)  # below the 64 px minimum and not a multiple of 8
    square = torch.rand(1, 3, SIZE, SIZE, generator=generator)
    settings = replace(EDIT, mode=mode)
    outputs = flux2_img2img(sampler, [odd, square], settings)
    assert [tuple(out.shape) for out in outputs] == [(1, 3, 50, 70), (1, 3, SIZE, SIZE)]
    assert all(0 <= float(out.min()) and float(out.max()) <= 1 for out in outputs)
    again = flux2_img2img(sampler, [odd.clone(), square], settings)
    assert all(torch.equal(a, b) for a, b in zip(outputs, again))  # same seed, same pixels
    other_seed = flux2_img2img(sampler, square, replace(settings, seed=4))[0]
    assert not torch.equal(other_seed, outputs[1])


def test_edit_modes_differ_and_sdedit_strength_matters(pair):
    _, sampler = pair
    image = _images(5, 1)
    reference = flux2_img2img(sampler, image, EDIT)[0]
    light = flux2_img2img(sampler, image, replace(EDIT, mode="sdedit", strength=0.5))[0]
    full = flux2_img2img(sampler, image, replace(EDIT, mode="sdedit", strength=1.0))[0]
    assert not torch.equal(reference, light) and not torch.equal(light, full)
    with pytest.raises(ValueError, match="strength"):
        flux2_img2img(sampler, image, replace(EDIT, mode="sdedit", strength=0.0))
    with pytest.raises(ValueError, match="mode"):
        flux2_img2img(sampler, image, replace(EDIT, mode="inpaint"))


def test_edit_size_keeps_the_pipeline_limits():
    assert edit_size(30, 44, 16, 768) == (64, 96)  # short side raised to 64
    assert edit_size(1024, 2048, 16, 768) == (384, 768)  # long side capped
    assert edit_size(210, 300, 16, 768) == (208, 304)  # rounded to multiples of 16


def test_lora_targets_are_attention_projections(pair):
    trainer, _ = pair
    names = lora_target_names(trainer.transformer, FLUX2_LORA.target_modules)
    assert names == [
        "transformer_blocks.0.attn.to_q",
        "transformer_blocks.0.attn.to_k",
        "transformer_blocks.0.attn.to_v",
        "transformer_blocks.0.attn.to_out.0",
        "single_transformer_blocks.0.attn.to_qkv_mlp_proj",
        "single_transformer_blocks.0.attn.to_out",
        "single_transformer_blocks.1.attn.to_qkv_mlp_proj",
        "single_transformer_blocks.1.attn.to_out",
    ]


def test_lora_steps_change_only_lora_parameters(pair):
    trainer, _ = pair
    frozen = _snapshot(trainer.vae, trainer.text_encoder)
    transformer_before = {name: tensor.detach().clone() for name, tensor in trainer.transformer.state_dict().items()}
    calls = []
    run = train_flux2_lora(trainer, _images(1), TRAIN, progress=lambda step, total, loss: calls.append((step, total, loss)))

    assert [(step, total) for step, total, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert len(run.losses) == 3 and all(loss > 0 for loss in run.losses)
    after = trainer.transformer.state_dict()
    base = {name.replace(".base_layer", ""): tensor for name, tensor in after.items() if "lora_" not in name}
    assert set(base) == set(transformer_before)
    assert all(torch.equal(base[name], transformer_before[name]) for name in transformer_before), "a base transformer weight changed"
    assert all(torch.equal(tensor, frozen[name]) for name, tensor in _snapshot(trainer.vae, trainer.text_encoder).items())
    assert any(tensor.abs().max() > 0 for name, tensor in after.items() if "lora_B" in name)  # B left zero
    trainable = {name for name, parameter in trainer.transformer.named_parameters() if parameter.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert run.state_dict and all(".lora_A." in key or ".lora_B." in key for key in run.state_dict)
    remove_lora(trainer)
    assert not any("lora_" in name for name, p in trainer.transformer.named_parameters() if p.requires_grad)


def test_duel_same_seed_differs_only_by_images(pair, tmp_path):
    trainer, sampler = pair
    clean, protected = _images(1), _images(2)
    base_samples = generate_flux2_samples(sampler, SAMPLE)
    frozen = _snapshot(trainer.transformer, sampler.transformer, sampler.vae, sampler.text_encoder)
    reports = []
    duel = flux2_lora_duel(trainer, sampler, clean, protected, tmp_path / "a", TRAIN, SAMPLE, progress=lambda *report: reports.append(report[:3]))
    assert [(name, step) for name, step, _ in reports] == [("clean", 1), ("clean", 2), ("clean", 3), ("protected", 1), ("protected", 2), ("protected", 3)]
    for name in ("clean", "protected"):
        assert (tmp_path / "a" / name / "pytorch_lora_weights.safetensors").is_file()
        assert len(json.loads((tmp_path / "a" / name / "training.json").read_text())["losses"]) == 3
    assert duel.clean_samples.shape == duel.protected_samples.shape == (2, 3, SIZE, SIZE)
    assert 0 <= float(duel.clean_samples.min()) and float(duel.clean_samples.max()) <= 1
    # The adapter loaded from disk into the *sampling* model changes its samples ...
    assert not torch.allclose(duel.clean_samples, base_samples, atol=1e-4)
    # ... the images alone separate the two runs ...
    assert duel.clean.losses != duel.protected.losses
    assert not torch.equal(duel.clean_samples, duel.protected_samples)
    # ... and every base weight of both models is untouched, no adapter left behind.
    after = _snapshot(trainer.transformer, sampler.transformer, sampler.vae, sampler.text_encoder)
    assert after.keys() == frozen.keys() and all(torch.equal(after[name], frozen[name]) for name in frozen)
    assert torch.equal(generate_flux2_samples(sampler, SAMPLE), base_samples)

    # Same images on both sides: identical losses, adapters and samples (also the determinism check).
    twin = flux2_lora_duel(trainer, sampler, clean, clean.clone(), tmp_path / "b", TRAIN, SAMPLE)
    assert twin.clean.losses == twin.protected.losses == duel.clean.losses
    assert all(torch.equal(twin.clean.state_dict[key], twin.protected.state_dict[key]) for key in twin.clean.state_dict)
    assert torch.equal(twin.clean_samples, twin.protected_samples) and torch.equal(twin.clean_samples, duel.clean_samples)


def test_round_trip_through_the_flux2_vae(pair):
    _, sampler = pair
    image = torch.rand(1, 3, 30, 44, generator=torch.Generator().manual_seed(2))
    out = flux2_round_trip(sampler.vae, image)
    assert out.shape == image.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert torch.equal(out, flux2_round_trip(sampler, image))  # a pipeline works too: its VAE
    batch = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(3))
    assert flux2_round_trip(sampler.vae, batch).shape == batch.shape


def test_dispatch_by_family_runs_both_families(tmp_path):
    for family in FAMILIES:
        mimic = load_mimic(family, dummy=True, device="cpu")
        assert mimic.family == family
        image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        assert family_round_trip(mimic, image).shape == image.shape
        edited = family_img2img(mimic, image)  # the family's default edit
        assert edited[0].shape == image.shape
    flux = load_mimic("flux.2-klein", dummy=True, device="cpu")
    assert flux.trainer is not flux.sampler and flux.trainer.vae is flux.sampler.vae
    settings = lora_settings("flux.2-klein", steps=1, resolution=SIZE, rank=2)
    assert settings.target_modules == FLUX2_LORA.target_modules
    duel = family_lora_duel(flux, _images(1), _images(2), tmp_path, settings, replace(SAMPLE, count=1))
    assert duel.clean_samples.shape == (1, 3, SIZE, SIZE)


def test_cli_family_flux2_tiny(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(_images(7)):
        to_pil(image).save(folder / f"{index}.png")
    fast = ["--family", "flux.2-klein", "--dummy", "--steps", "2", "--rank", "2", "--resolution", str(SIZE), "--samples", "1", "--sample-steps", "2"]
    assert main(["lora", str(folder), "--out", str(tmp_path / "lora"), *fast]) == 0
    assert (tmp_path / "lora" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "lora" / "sample_00.png").is_file()
    edit = ["--family", "flux.2-klein", "--dummy", "--protected", str(folder), "--steps", "2"]
    assert main(["img2img", str(folder), "--out", str(tmp_path / "edit"), *edit]) == 0
    assert json.loads((tmp_path / "edit" / "img2img.json").read_text())["mode"] == "reference"


def test_offline_hub_ids_fail_fast_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="Hugging Face Hub repo 'black-forest-labs/FLUX.2-klein-4B'.*--dummy"):
        load_flux2_pipeline("black-forest-labs/FLUX.2-klein-4B", device="cpu")
    with pytest.raises(WeightsUnavailableError, match="FLUX.2-klein-base-4B"):
        load_mimic("flux.2-klein", device="cpu")
    with pytest.raises(WeightsUnavailableError, match="local folder"):
        load_flux2_vae(tmp_path, device="cpu")


@pytest.mark.gpu
def test_tiny_stack_on_cuda(tmp_path):
    """2 LoRA steps (bf16 autocast, gradient checkpointing: the CUDA defaults) and a reference edit."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    trainer, sampler = load_flux2_pair(dummy=True, device="cuda", seed=0)
    settings = replace(TRAIN, steps=2)
    run = train_flux2_lora(trainer, _images(1).cuda(), settings)
    assert len(run.losses) == 2 and all(torch.isfinite(torch.tensor(run.losses)))
    remove_lora(trainer)
    duel = flux2_lora_duel(trainer, sampler, _images(1), _images(2), tmp_path, settings, replace(SAMPLE, count=1))
    assert duel.clean_samples.shape == (1, 3, SIZE, SIZE) and torch.isfinite(duel.clean_samples).all()
    edited = flux2_img2img(sampler, _images(3, 1).cuda(), EDIT)[0]
    assert edited.shape == (1, 3, SIZE, SIZE + 16) and 0 <= float(edited.min()) and float(edited.max()) <= 1
