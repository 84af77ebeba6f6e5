"""benchmarks.frontier: the generator's damage at a reference's visibility, read off its η-curve."""

from __future__ import annotations

import json

import pytest

from benchmarks import frontier


def row(lpips: float, vgg: float, psnr: float, damage: float, jpeg: float | None = None) -> dict:
    values = {"lpips": lpips, "lpips_vgg": vgg, "psnr": psnr, "damage": damage}
    if jpeg is not None:
        values["damage_jpeg75"] = jpeg
    return {"all": values}


ROWS = {
    "random ±4 sign noise": row(0.03, 0.12, 36.0, 0.02),
    "generator η 12": row(0.09, 0.15, 36.0, 0.06, 0.05),
    "generator η 4": row(0.01, 0.03, 44.0, 0.01, 0.008),
    "generator η 8 (default)": row(0.05, 0.09, 40.0, 0.03, 0.02),
    "per-image PGD, 8 steps, η 4": row(0.03, 0.20, 38.0, 0.06, 0.03),
    "perceptual PGD (+2·LPIPS-VGG), 8 steps, η 8": row(0.20, 0.40, 30.0, 0.10),
}


def test_the_generator_curve_is_its_eta_rows_in_eta_order_and_references_are_the_pgd_rows() -> None:
    assert [p.label for p in frontier.generator_curve(ROWS)] == ["generator η 4", "generator η 8 (default)", "generator η 12"]
    assert [p.label for p in frontier.references(ROWS)] == ["per-image PGD, 8 steps, η 4",
                                                             "perceptual PGD (+2·LPIPS-VGG), 8 steps, η 8"]


def test_interpolation_is_linear_between_neighbours_and_never_extrapolates() -> None:
    curve = frontier.generator_curve(ROWS)
    assert frontier.interpolate(curve, "lpips", 1.0, "damage", 0.03) == pytest.approx(0.02)  # halfway from η 4 to η 8
    assert frontier.interpolate(curve, "lpips", 1.0, "damage", 0.07) == pytest.approx(0.045)
    # PSNR: lower is more visible; 38 dB lies halfway between η 8 (40) and η 12 (36)
    assert frontier.interpolate(curve, "psnr", -1.0, "damage", 38.0) == pytest.approx(0.045)
    assert frontier.interpolate(curve, "lpips", 1.0, "damage", 0.5) is None
    assert frontier.interpolate(curve, "lpips_vgg", 1.0, "damage", 0.001) is None


def test_each_reference_gets_the_generators_damage_at_its_visibility_and_the_ratio() -> None:
    records = {r["reference"]: r["cells"] for r in frontier.compare(ROWS)}
    pgd = records["per-image PGD, 8 steps, η 4"]
    assert pgd["damage@lpips"]["generator"] == pytest.approx(0.02)
    assert pgd["damage@lpips"]["ratio"] == pytest.approx(0.02 / 0.06)  # PGD is above the curve by LPIPS-alex
    assert pgd["damage@psnr"]["ratio"] == pytest.approx(0.045 / 0.06)
    assert pgd["damage@lpips_vgg"]["ratio"] is None  # VGG 0.20 is past the generator's last point (0.15)
    assert pgd["damage_jpeg75@lpips"]["generator"] == pytest.approx(0.014)
    # perceptual PGD was not scored for robustness: no JPEG cell, and its visibility is beyond the curve
    assert all(cell["ratio"] is None for cell in records["perceptual PGD (+2·LPIPS-VGG), 8 steps, η 8"].values())
    tally = frontier.wins(frontier.compare(ROWS))
    assert tally["damage@lpips"] == [0, 1] and tally["damage@psnr"] == [0, 1]


def test_a_generator_above_the_reference_wins() -> None:
    rows = dict(ROWS) | {"per-image PGD, 8 steps, η 4": row(0.03, 0.06, 42.0, 0.005, 0.001)}
    tally = frontier.wins(frontier.compare(rows))
    assert tally["damage@lpips"] == [1, 1] and tally["damage@lpips_vgg"] == [1, 1] and tally["damage@psnr"] == [1, 1]


def test_the_script_writes_its_report_and_refuses_a_file_without_the_curve(tmp_path, capsys) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"images": ["a", "b"], "mimic": "TAEF2", "rows": ROWS}))
    out = tmp_path / "frontier.json"
    assert frontier.main([str(results), "--out", str(out)]) == 0
    report = json.loads(out.read_text())[str(results)]
    assert report["images"] == 2 and report["wins"]["damage@lpips"] == [0, 1]
    assert "0.33× (0.020 vs 0.060)" in capsys.readouterr().out
    results.write_text(json.dumps({"images": ["a"], "rows": {"generator η 8 (default)": ROWS["generator η 8 (default)"]}}))
    with pytest.raises(SystemExit):
        frontier.main([str(results), "--out", str(out)])
    assert "η-curve" in capsys.readouterr().err


def test_another_checkpoints_curve_is_compared_on_the_same_images_only(tmp_path, capsys) -> None:
    results, curves = tmp_path / "results.json", tmp_path / "curves.json"
    results.write_text(json.dumps({"images": ["a", "b"], "rows": ROWS}))
    better = {"generator η 4": row(0.01, 0.03, 44.0, 0.03), "generator η 8 (default)": row(0.05, 0.09, 40.0, 0.09)}
    curves.write_text(json.dumps({"images": ["a", "b"], "rows": better}))
    out = tmp_path / "frontier.json"
    assert frontier.main([str(results), "--curves", str(curves), "--out", str(out)]) == 0
    cells = json.loads(out.read_text())[str(results)]["comparisons"][0]["cells"]
    assert cells["damage@lpips"]["generator"] == pytest.approx(0.06)  # halfway along the other curve
    curves.write_text(json.dumps({"images": ["a", "c"], "rows": better}))
    with pytest.raises(SystemExit):
        frontier.main([str(results), "--curves", str(curves), "--out", str(out)])
    assert "other images" in capsys.readouterr().err


def test_wins_are_also_counted_over_the_references_that_keep_the_flat_region_rule(tmp_path, capsys) -> None:
    """A reference whose energy sits in flat regions (ratio > 0.5) is left out of the second tally; one without the
    measure too. The table shows each reference's flat ratio."""
    kept = row(0.03, 0.20, 38.0, 0.01, 0.005)
    kept["all"]["flat_ratio"] = 0.3
    broken = row(0.03, 0.20, 38.0, 0.06, 0.03)
    broken["all"]["flat_ratio"] = 0.9
    rows = dict(ROWS) | {"per-image PGD in the generator's texture budget, η 8": kept, "per-image PGD, 8 steps, η 4": broken}
    records = frontier.compare(rows)
    assert [frontier.keeps_flat_rule(r) for r in records] == [False, False, True]  # perceptual PGD has no flat ratio
    assert frontier.wins([r for r in records if frontier.keeps_flat_rule(r)])["damage@lpips"] == [1, 1]
    assert frontier.wins(records)["damage@lpips"] == [1, 2]
    results, out = tmp_path / "results.json", tmp_path / "frontier.json"
    results.write_text(json.dumps({"images": ["a"], "rows": rows}))
    assert frontier.main([str(results), "--out", str(out)]) == 0
    assert json.loads(out.read_text())[str(results)]["wins_flat_rule"]["damage@psnr"] == [1, 1]
    printed = capsys.readouterr().out
    assert "0.030 / 0.200 / 38.0 / 0.30" in printed and "0.400 / 30.0 / n/m" in printed
