"""The Ray Data batch job on a local Ray instance (2 CPUs, no cluster) with tiny random models.

One Ray instance serves the whole module; each job starts its own actors, which costs most of a
job's time here (a fresh worker imports torch and diffusers: about 10 s on 2 busy cores).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PROJECT_ROOT, SHARED
from fastprotect import cli, cluster
from fastprotect.cluster_job import atomic_write, list_inputs, plan_outputs, resolve
from fastprotect.outputs import TEMP_PREFIX
from fastprotect.dummy import dummy_protector

TESTS = Path(__file__).resolve().parent
REAL_IMAGES = SHARED / "data" / "images"
DOMAINS = ("cartoon", "face", "object", "painting")


def _pythonpath() -> str:
    return os.pathsep.join([str(PROJECT_ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module; workers import fastprotect (installed) from here."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements.txt)")
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _write_collection(folder: Path) -> str:
    """8 images (2 real ones per domain when ../shared is present, else generated) + a corrupt file + a text file."""
    folder.mkdir()
    if REAL_IMAGES.is_dir():
        for domain in DOMAINS:
            for source in sorted((REAL_IMAGES / domain).glob("*.jpg"))[:2]:
                (folder / source.name).write_bytes(source.read_bytes())
        kind = "real"
    else:
        rng = np.random.default_rng(0)
        for index in range(8):
            size = (48 + 8 * index, 64 - 4 * index, 3)
            Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(folder / f"generated_{index}.png")
        kind = "generated"
    good = next(p for p in sorted(folder.iterdir()))
    (folder / "broken.jpg").write_bytes(good.read_bytes()[:2000])  # truncated
    (folder / "notes.txt").write_text("not an image\n")
    return kind


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*_protected.png"))}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, ray_address):
    """The collection protected once by the job (2 actors, 1 CPU each): folders, exit status, report."""
    root = tmp_path_factory.mktemp("cluster")
    inputs, outputs = root / "in", root / "out"
    kind = _write_collection(inputs)
    status = cluster.main([str(inputs), str(outputs), "--all-files"], factory=dummy_protector)
    report = json.loads((outputs / "report.json").read_text())
    return {"inputs": inputs, "outputs": outputs, "status": status, "report": report, "kind": kind, "pngs": _outputs(outputs)}


# ------------------------------------------------------------------------------ without Ray
def test_import_does_not_load_ray_or_torch():
    code = "import sys, fastprotect.cluster; print(sorted(m for m in ('ray', 'torch', 'pyarrow') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [["in", "out", "--eta", "0"], ["in"], ["in", "out", "--actors", "0"], ["in", "out", "--bogus"],
                                  ["/no/such/folder", "out"]])
def test_misuse_is_one_line_and_exit_2(argv, tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastprotect.cluster", *argv], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": _pythonpath()})
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flags", [["--max-pixels", "0"], ["--seed", str(2**64)], ["--encoder-kind", "taef2"]])
def test_the_clis_limits_are_checked_before_the_job(flags, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cluster.parse_args([str(tmp_path), str(tmp_path / "out"), *flags])
    assert exit_info.value.code == 2 and flags[0] in capsys.readouterr().err


def test_output_names_are_the_clis_and_unique(tmp_path):
    assert plan_outputs(["/a/photo.png", "/b/Photo.jpg", "/a/x.y.png"]) == [
        "photo_protected.png", "Photo_2_protected.png", "x.y_protected.png"]


def test_output_names_are_sanitised_and_long_ones_shortened_with_a_digest():
    long_stem = "ж" * 120  # 240 bytes: too long for "<stem>_protected.png" plus any temporary name
    paths = ["/in/line\nbreak.png", "/in/\u202egnp.exe.png", '/in/a:b?c<d>e*f|g"h.png', "/in/back\\slash.jpg",
             f"/in/{long_stem}1.png", f"/in/{long_stem}2.png"]
    names = plan_outputs(paths)
    assert names[:4] == ["line_break_protected.png", "_gnp.exe_protected.png", "a_b_c_d_e_f_g_h_protected.png",
                         "back_slash_protected.png"]
    first, second = names[4:]
    assert first != second and first.startswith("ж" * 40) and "~" in first  # shortened, told apart by a digest
    assert all(len(name.encode()) < 192 for name in (first, second))
    assert plan_outputs(paths[5:]) == [second]  # the digest is the name's own, not its place in the listing


def test_a_long_output_name_is_written_not_refused(tmp_path):
    filesystem, root = resolve(str(tmp_path))
    name = "x" * 230 + "_protected.png"  # 244 bytes: legal, and the temporary beside it must be too
    atomic_write(filesystem, f"{root}/{name}", b"data")
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_an_unwritable_output_stops_the_job_at_its_start(tmp_path, capsys, monkeypatch):
    from test_cli import unwritable_folder

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.new("RGB", (16, 16)).save(inputs / "a.png")

    def no_ray(address):
        raise AssertionError("Ray started although the output cannot be written")

    monkeypatch.setattr(cluster, "ensure_ray", no_ray)
    assert cluster.main([str(inputs), str(unwritable_folder(tmp_path))], factory=dummy_protector) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write to") and "rerun" not in err and len(err.strip().splitlines()) == 1, err


def test_listing_takes_image_suffixes_or_all_files_and_skips_hidden(tmp_path):
    for name in ["b.JPG", "a.png", "notes.txt", ".hidden.png", "_SUCCESS"]:
        (tmp_path / name).write_bytes(b"x")
    filesystem, root = resolve(str(tmp_path))
    assert [Path(p).name for p in list_inputs(filesystem, root, recursive=False, all_files=False)] == ["a.png", "b.JPG"]
    assert [Path(p).name for p in list_inputs(filesystem, root, recursive=False, all_files=True)] == ["a.png", "b.JPG", "notes.txt"]


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    filesystem, root = resolve(str(tmp_path))
    with pytest.raises(TypeError):  # fails after the temporary file was opened
        atomic_write(filesystem, f"{root}/x_protected.png", object())
    assert list(tmp_path.iterdir()) == []
    atomic_write(filesystem, f"{root}/x_protected.png", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["x_protected.png"]


# ------------------------------------------------------------------------------ on Ray
def test_real_images_are_used_when_shared_is_present(first_run):
    if not REAL_IMAGES.is_dir():
        pytest.skip(f"needs {REAL_IMAGES} (real images shared with the team); the job ran on generated images")
    assert first_run["kind"] == "real"


def test_collection_gives_pngs_and_failure_rows(first_run):
    outputs, report = first_run["outputs"], first_run["report"]
    assert first_run["status"] == 1  # some inputs failed
    assert len(first_run["pngs"]) == 8
    assert not [p for p in outputs.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert len(report) == 10 and [row["status"] for row in report].count("ok") == 8
    failed = {Path(row["path"]).name: row["reason"] for row in report if row["status"] == "failed"}
    assert set(failed) == {"broken.jpg", "notes.txt"} and all(failed.values())
    for row in report:
        if row["status"] == "ok":
            assert row["target"] in ("low", "mid", "high") and 0 < row["linf_levels"] <= 8 and row["seconds"] > 0
            with Image.open(row["output"]) as image, Image.open(row["path"]) as source:
                assert image.format == "PNG" and image.size == source.size
    import pyarrow.parquet as pq

    table = pq.read_table(outputs / "report.parquet")
    assert table.num_rows == 10 and table.column("status").to_pylist() == [row["status"] for row in report]


def test_outputs_are_byte_identical_to_the_cli(first_run, tmp_path, monkeypatch):
    """Same settings includes the torch thread count: each actor runs 1 thread, so the CLI does too
    (float reductions split across threads can move a pixel by one level)."""
    monkeypatch.setattr("fastprotect.protect.Protector.from_pretrained", staticmethod(lambda *args, **kwargs: dummy_protector()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main([str(first_run["inputs"]), "-o", str(tmp_path)]) == 1  # broken.jpg fails there too
    finally:
        torch.set_num_threads(threads)
    assert _outputs(tmp_path) == first_run["pngs"]


def test_rerun_redoes_exactly_the_deleted_outputs(first_run):
    outputs = first_run["outputs"]
    names = sorted(first_run["pngs"])
    deleted, kept = names[:3], names[3:]
    stamps = {name: (outputs / name).stat().st_mtime_ns for name in kept}
    for name in deleted:
        (outputs / name).unlink()
    status = cluster.main([str(first_run["inputs"]), str(outputs), "--all-files"], factory=dummy_protector)
    report = json.loads((outputs / "report.json").read_text())
    assert status == 1  # the two bad inputs are retried and fail again
    redone = sorted(Path(row["output"]).name for row in report if row["status"] == "ok")
    assert redone == deleted
    assert sorted(Path(row["output"]).name for row in report if row["status"] == "exists") == kept
    assert {name: (outputs / name).stat().st_mtime_ns for name in kept} == stamps  # untouched
    assert _outputs(outputs) == first_run["pngs"]


_KILLABLE_DRIVER = """
import os, sys, time
import ray
from fastprotect import cluster
from fastprotect.dummy import dummy_protector

class Slow:
    '''A tiny Protector that takes 1.5 s per image, so the job is still running when it is killed.'''
    def __init__(self):
        self.inner = dummy_protector()
    def protect(self, *args, **kwargs):
        time.sleep(1.5)
        return self.inner.protect(*args, **kwargs)

ray.init(address=sys.argv[1], runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
sys.exit(cluster.main(sys.argv[2:], factory=Slow))
"""


def test_killed_job_resumes_on_rerun(first_run, ray_address, tmp_path):
    outputs = tmp_path / "out"
    argv = [ray_address, str(first_run["inputs"]), str(outputs), "--all-files"]
    log = tmp_path / "driver.log"
    with log.open("w") as sink:
        driver = subprocess.Popen([sys.executable, "-c", _KILLABLE_DRIVER, *argv], cwd=PROJECT_ROOT,
                                  env={**os.environ, "PYTHONPATH": _pythonpath()}, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(list(outputs.glob("*_protected.png"))) < 2 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    written = _outputs(outputs)
    assert 2 <= len(written) < 8, f"the job should have been killed half-way; its log ends:\n{log.read_text()[-2000:]}"
    assert all(first_run["pngs"][name] == data for name, data in written.items())  # complete, never truncated
    status = cluster.main([str(first_run["inputs"]), str(outputs), "--all-files"], factory=dummy_protector)
    report = json.loads((outputs / "report.json").read_text())
    assert status == 1
    assert sum(row["status"] == "exists" for row in report) >= len(written)
    assert _outputs(outputs) == first_run["pngs"]
    assert not [p for p in outputs.iterdir() if p.name.startswith(TEMP_PREFIX)]


class _CrashOnce:
    """Kills its own worker process on the first image (a marker file says it happened), like an OOM kill."""

    def __init__(self, marker: str) -> None:
        self.marker, self.inner = Path(marker), dummy_protector()

    def protect(self, *args, **kwargs):
        if not self.marker.exists():
            self.marker.write_text("crashed")
            os._exit(1)
        return self.inner.protect(*args, **kwargs)


@pytest.mark.slow
def test_a_crashed_actor_is_restarted_and_its_batch_retried(first_run, tmp_path):
    from functools import partial

    outputs = tmp_path / "out"
    factory = partial(_CrashOnce, str(tmp_path / "crashed"))
    status = cluster.main([str(first_run["inputs"]), str(outputs), "--actors", "1"], factory=factory)
    assert (tmp_path / "crashed").exists()
    assert status == 1  # broken.jpg only
    assert _outputs(outputs) == first_run["pngs"]


def test_missing_weights_exit_2_before_any_actor(first_run, tmp_path, capsys):
    from fastprotect.hub import WeightsUnavailableError

    def no_weights():
        raise WeightsUnavailableError("no TAEF2 encoder: set FASTPROTECT_TAEF2")

    assert cluster.main([str(first_run["inputs"]), str(tmp_path / "out")], factory=no_weights) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "FASTPROTECT_TAEF2" in err and "Traceback" not in err


def test_benchmark_cost_estimate_is_cpu_seconds_per_image_times_a_million():
    from benchmarks import cluster_throughput

    estimate = cluster_throughput.cost_estimate([{"size": "512²", "cpu_s_per_image": 0.36}], usd_per_vcpu_hour=0.04)
    assert estimate["512²"]["vcpu_hours_per_million"] == pytest.approx(100)
    assert estimate["512²"]["usd_per_million"] == pytest.approx(4)
