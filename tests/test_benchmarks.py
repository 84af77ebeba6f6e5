"""Smoke tests of the benchmark scripts: they run in process on tiny random models and emit their
tables and JSON. Not timed tests: no assertion is made on any number of seconds."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import ablate_speed, latency
from benchmarks.common import parse_size, size_label


@pytest.fixture(autouse=True)
def keep_thread_count():
    """The scripts' --threads sets torch's global thread count: give it back to the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_size_parsing() -> None:
    assert parse_size("512") == (512, 512)
    assert parse_size("4096x3072") == (4096, 3072)
    assert size_label(4096, 3072) == "4096×3072" and size_label(512, 512) == "512²"


def test_latency_script_emits_table_and_json(tmp_path, capsys) -> None:
    out, md = tmp_path / "latency.json", tmp_path / "latency.md"
    code = latency.main([
        "--encoder", "tiny", "--sizes", "64,96x64", "--runs", "1", "--warmup", "0", "--pgd-size", "64",
        "--pgd-steps-timed", "1", "--threads", "1", "--checkpoint", str(tmp_path / "no-checkpoint"), "--out", str(out), "--markdown", str(md),
    ])
    assert code == 0
    results = json.loads(out.read_text())
    assert [row["size"] for row in results["sizes"]] == ["64²", "96×64"]
    for row in results["sizes"]:
        assert set(latency.STAGES) | {"total", "cpu"} <= set(row["median_s"])
        assert row["peak_memory_bytes"] > 0
        parts = sum(row["median_s"][stage] for stage in latency.STAGES)
        assert parts == pytest.approx(row["median_s"]["total"], rel=0.05, abs=0.02)
    for key in ("cpu_model", "logical_cores", "torch", "device", "load_average"):
        assert key in results["machine"]
    assert results["mixture"].startswith("random")
    pgd = results["pgd"]
    assert pgd["per_step_s"] > 0 and pgd["photoguard_steps"] == 200 and pgd["photoguard_ratio"] > 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| size |"))
    for stage in latency.STAGES:
        assert f" {stage} " in header
    assert "PhotoGuard default" in printed and "Table 2" in printed
    assert md.read_text().strip() in printed


def test_ablation_script_runs(tmp_path, capsys) -> None:
    out = tmp_path / "ablate.json"
    code = ablate_speed.main(["--encoder", "tiny", "--quick", "--size", "64", "--per-domain", "1", "--threads", "1",
                              "--checkpoint", str(tmp_path / "none"), "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert {"assign_size", "map_size", "grad_mode", "channels_last", "half", "batching", "warmup", "png"} <= set(results["ablations"])
    assert "PNG compress level" in capsys.readouterr().out
