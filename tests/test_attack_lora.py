"""Quick LoRA on the dummy SD-1.5 stack: only adapters train, save/reload is exact, sampling and
training repeat for a seed, the duel uses identical settings for both sets. Plumbing, not efficacy."""

from __future__ import annotations

import pytest
import torch

from attack.lora import (
    LoraSettings,
    SampleSettings,
    generate_samples,
    lora_duel,
    remove_lora,
    save_lora,
    train_lora,
    use_lora,
)
from fastprotect.dummy import dummy_sd15_pipeline

SIZE = 32
TRAIN = LoraSettings(steps=3, resolution=SIZE, rank=4, learning_rate=1e-2, seed=0)
SAMPLE = SampleSettings(count=2, steps=2, resolution=SIZE, seed=0)
ONE_SAMPLE = SampleSettings(count=1, steps=2, resolution=SIZE, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small models: one thread is faster


@pytest.fixture
def pipe():
    return dummy_sd15_pipeline(seed=0)


@pytest.fixture
def images():
    return torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(1))


def _base_name(name: str) -> str:
    return name.replace(".base_layer", "")


def test_lora_steps_change_only_lora_parameters(pipe, images):
    before = {name: tensor.detach().clone() for module in (pipe.unet, pipe.vae, pipe.text_encoder) for name, tensor in module.state_dict().items()}
    unet_before = {name: tensor.detach().clone() for name, tensor in pipe.unet.state_dict().items()}
    calls = []
    run = train_lora(pipe, images, TRAIN, progress=lambda step, total, loss: calls.append((step, total, loss)))

    assert [(step, total) for step, total, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert len(run.losses) == 3 and all(loss > 0 for loss in run.losses)
    after = pipe.unet.state_dict()
    lora = {name: tensor for name, tensor in after.items() if "lora_" in name}
    base = {_base_name(name): tensor for name, tensor in after.items() if "lora_" not in name}
    assert set(base) == set(unet_before)  # the adapter added parameters, it renamed none away
    assert all(torch.equal(base[name], unet_before[name]) for name in unet_before), "a base UNet weight changed"
    for module in (pipe.vae, pipe.text_encoder):
        assert all(torch.equal(tensor, before[name]) for name, tensor in module.state_dict().items())
    # B starts at zero (gaussian init): after 3 Adam steps the adapter is no longer the identity.
    assert lora and any(tensor.abs().max() > 0 for name, tensor in lora.items() if "lora_B" in name)
    trainable = {name for name, parameter in pipe.unet.named_parameters() if parameter.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert run.state_dict and all("lora" in key for key in run.state_dict)


def test_adapter_saves_and_reloads_to_identical_samples(pipe, images, tmp_path):
    run = train_lora(pipe, images, TRAIN)
    trained = generate_samples(pipe, ONE_SAMPLE)
    save_lora(run, tmp_path / "lora")
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "lora" / "training.json").is_file()
    remove_lora(pipe)
    base = generate_samples(pipe, ONE_SAMPLE)
    assert not torch.allclose(base, trained, atol=1e-4), "the trained adapter had no effect on the samples"

    with use_lora(pipe, tmp_path / "lora"):
        reloaded = generate_samples(pipe, ONE_SAMPLE)
    torch.testing.assert_close(reloaded, trained, rtol=0, atol=1e-6)
    assert torch.equal(generate_samples(pipe, ONE_SAMPLE), base)  # the adapter is gone again


def test_sampling_is_deterministic_for_a_seed(pipe):
    first = generate_samples(pipe, SAMPLE)
    assert first.shape == (2, 3, SIZE, SIZE) and 0 <= float(first.min()) and float(first.max()) <= 1
    assert torch.equal(first, generate_samples(pipe, SAMPLE))
    # Sample i is seeded with seed + i: seed 1 alone reproduces sample 1 and differs from sample 0.
    seed_one = generate_samples(pipe, SampleSettings(count=1, steps=2, resolution=SIZE, seed=1))
    assert torch.equal(first[1:], seed_one) and not torch.equal(first[:1], seed_one)


def test_duel_uses_identical_settings_for_both_sets(pipe, images, tmp_path):
    # Also runs the GPU-only code paths on CPU: autocast (bf16 here) and gradient checkpointing.
    steps = LoraSettings(steps=2, resolution=SIZE, rank=4, learning_rate=1e-2, mixed_precision="bf16", gradient_checkpointing=True)
    reports = []
    duel = lora_duel(pipe, images, images.clone(), tmp_path, steps, SAMPLE, progress=lambda *report: reports.append(report[:3]))
    assert [name for name, _, _ in reports] == ["clean", "clean", "protected", "protected"]
    for name in ("clean", "protected"):
        assert (tmp_path / name / "pytorch_lora_weights.safetensors").is_file()
    # Same images + same seeds -> the same adapter and the same samples: the duel's two runs differ
    # in nothing but their pixels (this is also the training-determinism check).
    assert duel.clean.losses == duel.protected.losses
    assert torch.equal(duel.clean_samples, duel.protected_samples)
    assert all(torch.equal(duel.clean.state_dict[key], duel.protected.state_dict[key]) for key in duel.clean.state_dict)
    assert duel.clean_samples.shape == (2, 3, SIZE, SIZE)
    assert not any("lora_" in name for name, p in pipe.unet.named_parameters() if p.requires_grad)
    assert not pipe.unet.is_gradient_checkpointing and not pipe.unet.training
