"""scripts.make_plots: the plots of docs/EVALUATION.md are drawn from a results file, and refuse a file that
lacks a series they need (rather than drawing a plot with a method silently missing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from scripts.make_plots import DOMAINS, SERIES, MissingSeries, main, make_plots, series_points

PLOTS = ("eval_frontier.png", "eval_domains.png", "eval_robustness.png")


def _row(eta: int, slope: float) -> dict:
    """A row in noise_control's shape: visibility grows with η, damage with visibility (made-up, monotone)."""
    def measures(offset: float) -> dict:
        lpips = 0.007 * eta + offset
        return {
            "lpips": lpips, "lpips_vgg": 2 * lpips, "psnr": 48.0 - 1.1 * eta, "flat_ratio": 0.5,
            "damage": slope * lpips, "noise_damage": 0.5 * lpips, "ratio": 2 * slope,
            "survives_jpeg75": 0.05 * eta, "survives_resize-half": 0.9,
        }
    return {**{domain: measures(0.001 * index) for index, domain in enumerate(DOMAINS)}, "all": measures(0.002)}


def _fixture(tmp_path: Path, *, without: str | None = None) -> Path:
    rows = {}
    for eta in (4, 8, 12):
        rows[f"generator η {eta}" + (" (default)" if eta == 8 else "")] = _row(eta, 1.2)
        rows[f"mixture, adaptive strength, η {eta}"] = _row(eta, 0.9)
    for eta in (2, 4, 8):
        rows[f"per-image PGD, 8 steps, η {eta}"] = _row(eta, 1.1)
    for eta in (4, 8):
        rows[f"random ±{eta} sign noise"] = _row(eta, 0.5)
    if without is not None:
        rows = {name: row for name, row in rows.items() if not name.startswith(without)}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"mimic": "TAEF2 (test)", "images": ["a.jpg", "b.jpg"], "size": 64, "rows": rows}))
    return path


def test_every_plot_is_written_from_a_results_file(tmp_path: Path) -> None:
    written = make_plots(_fixture(tmp_path), tmp_path / "out")
    assert sorted(path.name for path in written) == sorted(PLOTS)
    for name in PLOTS:
        with Image.open(tmp_path / "out" / name) as image:
            assert image.format == "PNG" and image.width > 600 and image.height > 300


def test_the_generators_default_row_belongs_to_its_eta_curve(tmp_path: Path) -> None:
    rows = json.loads(_fixture(tmp_path).read_text())["rows"]
    assert [eta for eta, _ in series_points(rows, SERIES[0])] == [4, 8, 12]


@pytest.mark.parametrize("missing", ["mixture", "per-image PGD", "random", "generator"])
def test_a_missing_required_series_is_an_error_and_nothing_is_drawn(tmp_path: Path, missing: str, capsys) -> None:
    results = _fixture(tmp_path, without=missing)
    with pytest.raises(MissingSeries):
        make_plots(results, tmp_path / "out")
    assert main(["--results", str(results), "--heldout", "", "--out", str(tmp_path / "cli")]) == 2
    assert "no rows for the series" in capsys.readouterr().out
    assert not (tmp_path / "cli").exists()


def test_the_committed_results_hold_every_series_the_plots_need() -> None:
    """The default input of `python -m scripts.make_plots`: renaming a row in the benchmark breaks the docs' plots here."""
    from scripts.make_plots import DEFAULT_MAIN, load_rows

    rows = load_rows(DEFAULT_MAIN)
    for series in SERIES:
        if series.required:
            assert len(series_points(rows, series)) >= 2, series.label
