"""Command line over a folder: good files written, bad ones named, exit status says so."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fastprotect import cli
from fastprotect.dummy import dummy_protector


@pytest.fixture()
def patched_protector(monkeypatch):
    """The CLI loads weights through Protector.from_pretrained; give it dummy models instead."""
    calls = []

    def fake_from_pretrained(checkpoint=None, **kwargs):
        calls.append((checkpoint, kwargs))
        return dummy_protector()

    monkeypatch.setattr("fastprotect.protect.Protector.from_pretrained", staticmethod(fake_from_pretrained))
    return calls


def _write_inputs(folder):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 30, 3), dtype=np.uint8)).save(folder / "b.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(folder / "c.webp", lossless=True)
    good = (folder / "a.png").read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 2])  # truncated: must be reported, not fatal


def test_folder_with_a_corrupt_file(tmp_path, patched_protector, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    _write_inputs(inputs)
    status = cli.main([str(inputs), "-o", str(outputs), "--report", str(tmp_path / "report.json")])
    assert status == 1
    written = sorted(p.name for p in outputs.iterdir())
    assert written == ["a_protected.png", "b_protected.png", "c_protected.png"]
    for name, size in [("a", (60, 40)), ("b", (30, 50)), ("c", (32, 32))]:
        image = Image.open(outputs / f"{name}_protected.png")
        assert image.format == "PNG" and image.size == size
    err = capsys.readouterr().err
    assert "broken.png" in err
    assert "Traceback" not in err


def test_inputs_with_one_name_up_to_case_get_distinct_outputs(tmp_path, patched_protector):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(inputs / "photo.png")
    Image.new("RGB", (16, 16), (10, 10, 200)).save(inputs / "Photo.jpg", quality=95)
    assert cli.main([str(inputs / "photo.png"), str(inputs / "Photo.jpg"), "-o", str(outputs)]) == 0
    written = sorted(p.name.lower() for p in outputs.iterdir())
    assert written == ["photo_2_protected.png", "photo_protected.png"]  # distinct also where case is ignored
    red = np.asarray(Image.open(outputs / "photo_protected.png"), dtype=int)
    assert abs(red[..., 0].mean() - 200) < 10  # the first input kept the plain name


def test_all_good_files_exit_zero(tmp_path, patched_protector):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("RGB", (24, 24), (10, 200, 30)).save(inputs / "ok.png")
    assert cli.main([str(inputs / "ok.png"), "-o", str(tmp_path / "out"), "--eta", "4"]) == 0
    out = np.asarray(Image.open(tmp_path / "out" / "ok_protected.png"), dtype=int)
    assert np.abs(out - np.array([10, 200, 30])).max() <= 4


@pytest.mark.parametrize("argv", [["x", "-o", "y", "--eta", "0"], ["x", "-o", "y", "--eta", "40"], ["x", "-o", "y", "--refine-steps", "-2"],
                                  ["x", "-o", "y", "--per-image", "--checkpoint", "z"], ["x", "-o", "y", "--method", "mixture", "--checkpoint", "z"],
                                  ["x", "-o", "y", "--method", "gan"], ["x"], ["x", "-o", "y", "--min-energy", "-1"],
                                  ["x", "-o", "y", "--min-energy", "nan"], ["x", "-o", "y", "--method", "mixture", "--min-energy", "2"],
                                  ["x", "-o", "y", "--per-image", "--min-energy", "2"]])
def test_bad_arguments_exit_before_loading(argv, patched_protector):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(argv)
    assert exit_info.value.code == 2
    assert patched_protector == []


def test_missing_weights_is_a_clear_error(tmp_path, capsys, monkeypatch):
    image = tmp_path / "ok.png"
    Image.new("RGB", (24, 24)).save(image)
    monkeypatch.setenv("FASTPROTECT_SD_VAE", str(tmp_path / "no-such-vae"))
    status = cli.main([str(image), "-o", str(tmp_path / "out"), "--per-image", "--encoder-kind", "sd-vae"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
