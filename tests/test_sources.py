"""Where weights come from: one precedence rule, the checkpoint's bundle, the Hub's single-file TAEF2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fastprotect import environment, sources, taesd
from fastprotect.encoders import TinyEncoder, TinyDecoder, load_autoencoder
from fastprotect.hub import WeightsUnavailableError

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "checkpoints" / "taef2-generator"  # the default
BUNDLED_MIXTURE = ROOT / "checkpoints" / "taef2-mixture"


@pytest.fixture
def clean_env(monkeypatch):
    for variable in environment.VARIABLES:
        monkeypatch.delenv(variable.name, raising=False)
    return monkeypatch


def _random_pair(kind: taesd.TinyKind, seed: int = 0) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    encoder, decoder = TinyEncoder(kind), TinyDecoder(kind)
    for module in (encoder, decoder):
        for parameter in module.parameters():
            parameter.data.normal_(0, 0.05)
    return encoder.net.state_dict(), decoder.net.state_dict()


# ------------------------------------------------------------------------------ precedence
def test_encoder_source_precedence_argument_environment_bundle_hub(clean_env, tmp_path):
    bundle = tmp_path / "ckpt"
    bundle.mkdir()
    (bundle / "taef2.safetensors").write_bytes(b"")
    assert sources.encoder_source("taef2").origin == "Hub default"
    assert sources.encoder_source("taef2").location == "madebyollin/taef2"
    assert sources.encoder_source("taef2", bundle=bundle).origin == "checkpoint bundle"
    clean_env.setenv("FASTPROTECT_TAEF2", "/somewhere/taef2")
    assert sources.encoder_source("taef2", bundle=bundle).location == "/somewhere/taef2"
    clean_env.setenv("FASTPROTECT_ENCODER_SOURCE", "/anywhere")
    assert sources.encoder_source("taef2", bundle=bundle).location == "/anywhere"  # the general variable wins
    assert sources.encoder_source("taef2", argument="/given", bundle=bundle).origin == "argument"


def test_a_bundle_of_another_kind_is_not_used(clean_env, tmp_path):
    (tmp_path / "taef2.safetensors").write_bytes(b"")
    chosen = sources.encoder_source("sd-vae", bundle=tmp_path)
    assert (chosen.location, chosen.subfolder, chosen.origin) == ("stable-diffusion-v1-5/stable-diffusion-v1-5", "vae", "Hub default")


def test_lpips_and_checkpoint_precedence(clean_env, tmp_path):
    (tmp_path / sources.LPIPS_BUNDLE_FILE).write_bytes(b"")
    assert sources.lpips_source().origin == "download"
    assert sources.lpips_source(bundle=tmp_path).location == str(tmp_path / sources.LPIPS_BUNDLE_FILE)
    clean_env.setenv("FASTPROTECT_LPIPS_BACKBONE", "/env/lpips.safetensors")
    assert sources.lpips_source(bundle=tmp_path).origin == "environment"
    assert sources.lpips_source(argument="/arg.safetensors", bundle=tmp_path).origin == "argument"
    assert Path(sources.checkpoint_source().location).resolve() == BUNDLED.resolve()
    assert sources.checkpoint_method(sources.checkpoint_source().location) == "generator"
    assert sources.checkpoint_method(str(BUNDLED_MIXTURE)) == "mixture"
    clean_env.setenv("FASTPROTECT_CHECKPOINT", "someone/mixture")
    assert sources.checkpoint_source().location == "someone/mixture"


# -------------------------------------------------------------------- the single-file layout
def test_single_file_layout_round_trips_the_original_keys():
    encoder, decoder = _random_pair("taef2")
    joined = taesd.join_single_file(encoder, decoder)
    assert all(key.startswith(("encoder.layers.", "decoder.layers.")) for key in joined)
    assert "decoder.layers.0.weight" in joined and "1.weight" in decoder  # the Clamp layer shifts decoder indices
    halves = taesd.split_single_file(joined)
    assert halves["encoder"].keys() == encoder.keys() and halves["decoder"].keys() == decoder.keys()


def test_single_file_gives_the_same_latents_and_images_as_the_pair(tmp_path):
    encoder, decoder = _random_pair("taef2", seed=3)
    pair, single = tmp_path / "pair", tmp_path / "single"
    pair.mkdir(), single.mkdir()
    torch.save(encoder, pair / "taef2_encoder.pth")
    torch.save(decoder, pair / "taef2_decoder.pth")
    save_file({k: v.contiguous() for k, v in taesd.join_single_file(encoder, decoder).items()}, str(single / "taef2.safetensors"))
    images = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    a, b = load_autoencoder("taef2", pair), load_autoencoder("taef2", single)
    assert torch.equal(a.encoder.encode(images), b.encoder.encode(images))
    assert torch.equal(a.round_trip(images), b.round_trip(images))


def test_real_taef2_single_file_is_bit_identical_to_the_pth_pair(shared_weights, tmp_path):
    """The bundled taef2.safetensors (the Hub's layout) against the original .pth files."""
    images = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    original = load_autoencoder("taef2", shared_weights)
    bundled = load_autoencoder("taef2", BUNDLED / "taef2.safetensors")
    assert (BUNDLED / "taef2.safetensors").read_bytes() == (BUNDLED_MIXTURE / "taef2.safetensors").read_bytes()
    assert torch.equal(original.encoder.encode(images), bundled.encoder.encode(images))
    assert torch.equal(original.round_trip(images), bundled.round_trip(images))


def test_a_file_of_another_model_is_refused_with_its_keys(tmp_path):
    save_file({"unet.conv_in.weight": torch.zeros(1)}, str(tmp_path / "taef2.safetensors"))
    with pytest.raises(ValueError, match="unet.conv_in.weight"):
        load_autoencoder("taef2", tmp_path)


def test_an_offline_hub_miss_is_one_quick_call(clean_env, monkeypatch):
    import huggingface_hub

    calls = []
    real = huggingface_hub.hf_hub_download

    def counting(*args, **kwargs):
        calls.append(kwargs.get("filename"))
        return real(*args, **kwargs)

    clean_env.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", counting)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="FASTPROTECT_TAEF2"):
        load_autoencoder("taef2")
    assert calls == ["taef2.safetensors"]
    assert time.perf_counter() - start < 10


# ------------------------------------------------------------------------- a fresh machine
def test_fresh_machine_runs_the_pretrained_fast_path_offline(tmp_path):
    """No FASTPROTECT_* variable, Hub offline: the CLI protects in pretrained mode from the bundle."""
    Image.new("RGB", (96, 64), (120, 160, 200)).save(tmp_path / "sky.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTPROTECT_")}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "fastprotect", str(tmp_path / "sky.png"), "-o", str(tmp_path / "out"), "--report", str(tmp_path / "r.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads((tmp_path / "r.json").read_text())
    assert row["mode"] == "pretrained" and row["method"] == "generator" and row["lpips"] is not None
    # The paper's mixture is the other bundled method, one flag away, offline too.
    done = subprocess.run(
        [sys.executable, "-m", "fastprotect", str(tmp_path / "sky.png"), "-o", str(tmp_path / "out2"), "--method", "mixture",
         "--report", str(tmp_path / "r2.json")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads((tmp_path / "r2.json").read_text())
    assert row["mode"] == "pretrained" and row["method"] == "mixture" and row["group"] is not None


# ------------------------------------------------------------------- the variables' one list
def test_every_fastprotect_variable_in_the_code_is_registered():
    names = set()
    for path in [*ROOT.glob("*.py"), *ROOT.glob("fastprotect/**/*.py"), *ROOT.glob("attack/**/*.py"),
                 *ROOT.glob("train/**/*.py"), *ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("webapp/**/*.py")]:
        names |= set(re.findall(r"FASTPROTECT_[A-Z0-9_]+", path.read_text()))
    registered = {variable.name for variable in environment.VARIABLES}
    assert names - registered == set()


def test_configuration_doc_is_the_registry():
    assert environment.markdown_table() in (ROOT / "docs" / "CONFIGURATION.md").read_text()


def test_unknown_variable_names_are_bugs():
    with pytest.raises(KeyError):
        environment.get("FASTPROTECT_NO_SUCH_THING")
