"""Command line over a folder: good files written, bad ones named, exit status says so; bad paths and
options refused before any work; files written whole or not at all; names shared with the Ray job."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PROJECT_ROOT
from fastprotect import cli
from fastprotect.dummy import dummy_protector
from fastprotect.outputs import TEMP_PREFIX, folder_problem


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


# ------------------------------------------------------------------------------ paths, checked before any work
def unwritable_folder(tmp_path: Path) -> Path:
    """An existing folder no file can be created in: a 0555 folder, or /sys for root (who ignores permission bits)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    sys_folder = Path("/sys")
    if sys_folder.is_dir() and folder_problem(sys_folder):
        return sys_folder
    pytest.skip("running as root and /sys is writable: no unwritable folder to test with")


def _bad_path_cases(tmp_path: Path) -> dict[str, list[str]]:
    image = tmp_path / "ok.png"
    Image.new("RGB", (24, 24), (10, 200, 30)).save(image)
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nothing-here.png")
    (tmp_path / "existing-folder").mkdir()
    ok, out = str(image), str(tmp_path / "out")
    return {
        "output under a file": [ok, "-o", str(tmp_path / "afile" / "sub")],
        "output under an unwritable folder": [ok, "-o", str(unwritable_folder(tmp_path) / "out")],
        "output empty": [ok, "-o", ""],
        "report in a missing folder": [ok, "-o", out, "--report", str(tmp_path / "missing_dir" / "r.json")],
        "report under a file": [ok, "-o", out, "--report", str(tmp_path / "afile" / "r.json")],
        "report is a folder": [ok, "-o", out, "--report", str(tmp_path / "existing-folder")],
        "report in an unwritable folder": [ok, "-o", out, "--report", str(unwritable_folder(tmp_path) / "r.json")],
        "report is an input": [ok, "-o", out, "--report", ok],
        "missing input": [str(tmp_path / "typo.png"), "-o", out],
        "dangling symlink input": [str(tmp_path / "gone.png"), "-o", out],
        "empty input": ["", "-o", out],
        "max pixels 0": [ok, "-o", out, "--max-pixels", "0"],
        "max pixels negative": [ok, "-o", out, "--max-pixels", "-5"],
        "seed beyond 64 bits": [ok, "-o", out, "--seed", str(2**64)],
        "local checkpoint missing": [ok, "-o", out, "--checkpoint", "./no-such-checkpoint"],
        "encoder kind without per-image": [ok, "-o", out, "--encoder-kind", "taef2"],
    }


BAD_PATH_CASES = ["output under a file", "output under an unwritable folder", "output empty", "report in a missing folder",
                  "report under a file", "report is a folder", "report in an unwritable folder", "report is an input", "missing input",
                  "dangling symlink input", "empty input", "max pixels 0", "max pixels negative", "seed beyond 64 bits",
                  "local checkpoint missing", "encoder kind without per-image"]


@pytest.mark.parametrize("case", BAD_PATH_CASES)
def test_bad_path_or_option_is_one_line_and_exit_2_before_any_work(case, tmp_path, patched_protector, capsys):
    argv = _bad_path_cases(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert patched_protector == []  # no model loaded
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no output folder created


def test_limit_from_the_environment_is_checked_at_start(tmp_path, patched_protector, capsys, monkeypatch):
    from fastprotect import images

    assert cli.MAX_PIXELS_ENV == images.MAX_PIXELS_ENV  # the CLI checks the variable the loader reads
    monkeypatch.setenv(cli.MAX_PIXELS_ENV, "0")
    image = tmp_path / "ok.png"
    Image.new("RGB", (24, 24)).save(image)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(image), "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and cli.MAX_PIXELS_ENV in capsys.readouterr().err
    assert patched_protector == [] and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ every skipped input reported
def test_every_folder_entry_that_is_not_protected_is_reported(tmp_path, patched_protector, capsys):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    Image.new("RGB", (24, 24), (10, 200, 30)).save(inputs / "a.png")
    Image.new("RGB", (24, 24), (10, 200, 30)).save(inputs / "sub" / "deeper.png")
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "gone.png").symlink_to(tmp_path / "deleted.png")  # an image name whose target is missing
    (inputs / "gone.txt").symlink_to(tmp_path / "deleted.txt")
    os.mkfifo(inputs / "pipe.jpg")  # would block a reader forever
    report = tmp_path / "report.json"
    status = cli.main([str(inputs), "-o", str(tmp_path / "out"), "--report", str(report)])
    assert status == 1  # gone.png and pipe.jpg were images by name and could not be read
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_protected.png"]
    err = capsys.readouterr().err
    rows = {Path(row["input"]).name: row for row in json.loads(report.read_text())}
    assert set(rows) == {"a.png", "sub", "notes.txt", "gone.png", "gone.txt", "pipe.jpg"}
    reasons = {"sub": "--recursive", "notes.txt": "not an image", "gone.png": "broken symbolic link",
               "gone.txt": "broken symbolic link", "pipe.jpg": "not a regular file"}
    for name, words in reasons.items():
        assert not rows[name]["ok"] and words in rows[name]["error"], rows[name]
        assert any(name in line and words in line for line in err.splitlines()), (name, err)
    assert rows["a.png"]["ok"]


def test_earlier_results_and_repeated_inputs_are_reported_not_protected_again(tmp_path, patched_protector, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (24, 24), (10, 200, 30)).save(folder / "a.png")
    assert cli.main([str(folder), "-o", str(folder)]) == 0  # results beside the originals
    capsys.readouterr()
    assert cli.main([str(folder), str(folder / "a.png"), "-o", str(folder)]) == 0  # the same again, a.png named twice
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_protected.png"]  # no a_protected_protected.png
    err = capsys.readouterr().err
    assert "a_protected.png: an earlier result in the output folder" in err
    assert "a.png: listed twice" in err


# ------------------------------------------------------------------------------ whole files or none
def test_an_interrupted_write_leaves_no_file_under_the_final_name(tmp_path, patched_protector, monkeypatch, capsys):
    from fastprotect import images

    real_save = images.save_png

    def save_half_then_stop(original, pixels, destination):
        buffer = io.BytesIO()
        real_save(original, pixels, buffer)
        destination.write(buffer.getvalue()[:100])  # a truncated PNG, as when the process dies mid-write
        destination.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "save_png", save_half_then_stop)
    image = tmp_path / "photo.png"
    Image.new("RGB", (24, 24), (10, 200, 30)).save(image)
    report = tmp_path / "report.json"
    assert cli.main([str(image), "-o", str(tmp_path / "out"), "--report", str(report)]) == 130  # as Ctrl-C
    assert list((tmp_path / "out").iterdir()) == []  # neither photo_protected.png nor the temporary
    assert json.loads(report.read_text()) == []  # the report is still written: nothing was finished
    err = capsys.readouterr().err
    assert "interrupted after 0 of 1" in err and "Traceback" not in err


_SLOW_WRITER = """
import sys, time
from fastprotect import cli, images
from fastprotect.dummy import dummy_protector
from fastprotect.protect import Protector

Protector.from_pretrained = staticmethod(lambda *args, **kwargs: dummy_protector())
real_save = images.save_png

def save_half_then_hang(original, pixels, destination):
    real_save(original, pixels, destination)
    destination.truncate(100)  # half a PNG on disk, then the process is killed
    destination.flush()
    time.sleep(600)

images.save_png = save_half_then_hang
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_cli_leaves_no_truncated_png_under_its_final_name(signal_number, tmp_path, patched_protector):
    image, out = tmp_path / "photo.png", tmp_path / "out"
    Image.new("RGB", (24, 24), (10, 200, 30)).save(image)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(image), "-o", str(out)], cwd=PROJECT_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not (out.is_dir() and any(out.iterdir())):
        time.sleep(0.1)
    time.sleep(0.5)  # inside time.sleep(600), the half PNG written
    process.send_signal(signal_number)
    _, err = process.communicate(timeout=60)
    left = [p.name for p in out.iterdir()]
    assert "photo_protected.png" not in left, err.decode()
    if signal_number == signal.SIGTERM:  # handled: the temporary is removed, the exit status says "terminated"
        assert left == [] and process.returncode == 128 + signal.SIGTERM
        return
    # Nothing runs on SIGKILL: a hidden temporary stays, and the next run clears it once it is stale.
    assert len(left) == 1 and left[0].startswith(TEMP_PREFIX)
    stale = out / left[0]
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = out / f"{TEMP_PREFIX}another-run-is-writing-this.part"  # young: it may be another run's
    fresh.write_bytes(b"x")
    assert cli.main([str(image), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([fresh.name, "photo_protected.png"])


# ------------------------------------------------------------------------------ names, shared with the Ray job
def test_output_names_are_safe_short_and_the_ray_jobs(tmp_path, patched_protector):
    from fastprotect.cluster_job import plan_outputs

    inputs = tmp_path / "in"
    inputs.mkdir()
    long_a, long_b = "é" * 100 + "a", "é" * 100 + "b"  # 201 bytes each, equal for their first 200
    names = ["new\nline.png", "evil\u202egnp.exe.png", 'colon:what?<>*|"x.png', "back\\slash.png", f"{long_a}.png", f"{long_b}.png"]
    for index, name in enumerate(names):
        Image.new("RGB", (16, 16), (index * 40, 0, 0)).save(inputs / name, format="PNG")
    files = sorted(inputs.iterdir())
    assert cli.main([*map(str, files), "-o", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(plan_outputs([str(p) for p in files]))  # one rule for both commands
    for name in written:
        assert len(name.encode()) <= 255 and name.endswith("_protected.png")
        assert not any(unicodedata.category(c) in ("Cc", "Cf") or c in '\\:?<>*|"' for c in name), name
    long_outputs = [name for name in written if name.startswith("é")]
    assert len(long_outputs) == 2 and all(len(name.encode()) < 192 and "~" in name for name in long_outputs)


def test_a_16_bit_png_is_protected_within_eta_of_its_rounded_values(tmp_path, patched_protector):
    from fixtures_images import png_16_bit

    rng = np.random.default_rng(30)
    levels = rng.integers(0, 256, (48, 48, 3))
    values = np.clip(levels * 257 + rng.integers(-128, 129, levels.shape), 0, 65535).astype(np.uint16)  # detail below one level
    (tmp_path / "deep.png").write_bytes(png_16_bit(values, color_type=2))
    assert cli.main([str(tmp_path / "deep.png"), "-o", str(tmp_path / "out"), "--eta", "8"]) == 0
    rounded = (values.astype(np.int64) * 255 + 32767) // 65535
    protected = np.asarray(Image.open(tmp_path / "out" / "deep_protected.png").convert("RGB"), dtype=np.int64)
    assert np.abs(protected - rounded).max() <= 8  # the high byte alone put some values 9 levels away
