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


def _upload_results(tmp_path: Path, name: str, sizes: tuple[int, ...], *, default: bool = True) -> Path:
    """An upload_eval results file in its own shape: two images per domain, the default row at each size."""
    images = [f"{domain}/{domain}_{i}.jpg" for domain in DOMAINS for i in range(2)]
    per_image = {"damage": [0.04] * len(images), "noise_damage": [0.01, 0.001] * len(DOMAINS)}
    summary = {domain: {"ratio": 4.0, "noise_damage": 0.0055} for domain in [*DOMAINS, "all"]}
    rows = {str(size): {"summary": summary, "per_image": per_image} for size in sizes}
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "rows": {"default": rows} if default else {"k4": rows}}))
    return path


def test_the_upload_plot_is_drawn_from_upload_eval_results(tmp_path: Path) -> None:
    upload = _upload_results(tmp_path, "u512.json", (512,))
    sizes = [upload, _upload_results(tmp_path, "u1024.json", (1024, 2048)), tmp_path / "not_run_yet.json"]
    written = make_plots(_fixture(tmp_path), tmp_path / "out", upload=upload, upload_sizes=sizes)
    assert [path.name for path in written][-1] == "eval_upload.png"
    with Image.open(tmp_path / "out" / "eval_upload.png") as image:
        assert image.format == "PNG" and image.width > 600


def test_upload_results_without_the_default_row_are_refused_before_drawing(tmp_path: Path, capsys) -> None:
    upload = _upload_results(tmp_path, "variants_only.json", (512,), default=False)
    with pytest.raises(MissingSeries):
        make_plots(_fixture(tmp_path), tmp_path / "out", upload=upload)
    assert not (tmp_path / "out").exists()
    assert main(["--results", str(_fixture(tmp_path)), "--heldout", "", "--upload", str(upload), "--out", str(tmp_path / "cli")]) == 2
    assert "no 'default' row" in capsys.readouterr().out


def test_the_committed_upload_results_hold_the_default_row() -> None:
    from scripts.make_plots import DEFAULT_UPLOAD, upload_default_row

    assert 512 in upload_default_row(DEFAULT_UPLOAD)
