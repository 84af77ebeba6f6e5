"""``python -m attack`` in process on the dummy SD-1.5 stack, and the clear offline failure for SD-1.5."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from attack.cli import main, parse_args
from attack.compare import ROW_TITLES, to_pil
from attack.pipeline import load_pipeline
from attack.settings import Img2ImgSettings, LoraSettings, SampleSettings
from fastprotect.hub import WeightsUnavailableError

FAST = ["--dummy", "--steps", "2", "--rank", "2", "--resolution", "32", "--samples", "2", "--sample-steps", "2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small models: one thread is faster


@pytest.fixture
def image_folders(tmp_path):
    clean, protected = tmp_path / "clean", tmp_path / "protected"
    clean.mkdir()
    protected.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(3):
        image = torch.rand(1, 3, 40, 48, generator=generator)
        to_pil(image).save(clean / f"{index}.png")
        to_pil((image + 8 / 255 * torch.randn(image.shape, generator=generator).sign()).clamp(0, 1)).save(protected / f"{index}.png")
    return clean, protected


def test_the_command_lines_defaults_are_the_settings_defaults():
    """One source for every default: the settings dataclasses (attack.settings), not the parser."""
    lora, sampling, edit = LoraSettings(), SampleSettings(), Img2ImgSettings()
    args = parse_args(["lora", "x.png"])
    assert (args.prompt, args.rank, args.steps, args.lr, args.resolution, args.batch_size, args.mixed_precision,
            args.gradient_checkpointing) == (lora.instance_prompt, lora.rank, lora.steps, lora.learning_rate,
                                             lora.resolution, lora.batch_size, lora.mixed_precision, lora.gradient_checkpointing)
    assert args.samples == sampling.count and not args.dummy
    args = parse_args(["img2img", "x.png"])
    assert (args.prompt, args.strength) == (edit.prompt, edit.strength)


# Run in a fresh interpreter: this one has imported everything already. Builds the whole parser and
# prints which of the libraries that take seconds to import it pulled in.
HELP_PROBE = """
import json, sys
import attack.cli
attack.cli.build_parser().format_help()
print(json.dumps([name for name in ("torch", "diffusers", "transformers", "peft") if name in sys.modules]))
"""


def test_help_imports_no_model_library():
    """`python -m attack --help` and the parser behind it load no torch, diffusers, transformers or peft
    (they made --help take 8–26 s on a busy machine): each sub-command imports what it runs."""
    root = Path(__file__).resolve().parents[1]
    probe = subprocess.run([sys.executable, "-c", HELP_PROBE], cwd=root, capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(probe.stdout.strip().splitlines()[-1]) == []
    shown = subprocess.run([sys.executable, "-m", "attack", "--help"], cwd=root, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and all(command in shown.stdout for command in ("roundtrip", "img2img", "lora", "compare"))


def test_cli_lora_dummy(image_folders, tmp_path):
    out = tmp_path / "lora_out"
    assert main(["lora", str(image_folders[0]), "--out", str(out), *FAST]) == 0
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert len(json.loads((out / "lora" / "training.json").read_text())["losses"]) == 2
    assert sorted(p.name for p in out.glob("sample_*.png")) == ["sample_00.png", "sample_01.png"]
    assert Image.open(out / "sample_00.png").size == (32, 32)


def test_cli_compare_dummy(image_folders, tmp_path):
    clean, protected = image_folders
    out = tmp_path / "duel"
    assert main(["compare", str(clean), "--protected", str(protected), "--out", str(out), "--no-metrics", *FAST]) == 0
    for name in ("clean", "protected"):
        assert (out / name / "pytorch_lora_weights.safetensors").is_file()
    assert Image.open(out / "grid.png").size == (3 * 128, len(ROW_TITLES) * 128)  # 3 columns: 3 inputs, 2 samples
    record = json.loads((out / "metrics.json").read_text())
    assert record["training"]["steps"] == 2 and record["sampling"]["count"] == 2


def test_offline_hub_base_fails_with_a_clear_message(monkeypatch, image_folders, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="Hugging Face Hub repo 'no-such-user/no-such-model'.*--dummy"):
        load_pipeline("no-such-user/no-such-model", device="cpu")
    assert main(["lora", str(image_folders[0]), "--base", "no-such-user/no-such-model", "--out", str(tmp_path / "o")]) == 2
    assert "--base" in capsys.readouterr().err
