"""Damage-vs-visibility frontiers: does the generator's curve lie above per-image PGD's? (issue 10's headline)

    python -m benchmarks.frontier [RESULTS.json ...] [--curves CURVES.json ...] [--out benchmarks/results/frontier.json]

Reads results files of ``benchmarks.noise_control`` (default: the TAEF2 table and the transfer one, where the
same protected images are scored through an encoder they were not made against). The generator's η-curve
(its "generator η N" rows) is a curve of (visibility, damage) points for each visibility measure: LPIPS-alex,
LPIPS-VGG and energy (PSNR, where lower means more visible). For every per-image reference row (every row
whose label holds "PGD": the plain PGD η-curve, PGD under the generator's budget, perceptual PGD), the
generator's damage *at the reference's visibility* is read off its curve by linear interpolation between
the two neighbouring generator points, and divided by the reference's damage: above 1, the generator does
more damage than that per-image optimisation at the same visibility. Outside the generator's range the cell
stays empty (no extrapolation). The same comparison is made with the damage that survives JPEG q75, when both
rows were scored for robustness.

The wins are also counted over the references that keep issue 10's flat-region rule (flat-region energy ratio
≤ FLAT_RULE, as the default does): plain PGD puts most of its energy where the image is flat, which is where
the encoder is most sensitive and where a perturbation shows most (benchmarks.sensitivity), so a reference that
breaks the rule buys damage with a kind of visibility the three measures above do not weigh.

Each cell compares two rows of one run (same images, same mimic), so the ratios are free of run-to-run drift.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import write_json
from benchmarks.noise_control import DEFAULT_OUT, TRANSFER_OUT

# (key in a row, column header, sign): the sign turns each measure into "larger = more visible"
MEASURES = (("lpips", "LPIPS-alex", 1.0), ("lpips_vgg", "LPIPS-VGG", 1.0), ("psnr", "PSNR", -1.0))
DAMAGES = (("damage", "damage"), ("damage_jpeg75", "damage after JPEG q75"))
GENERATOR_ROW = re.compile(r"^generator η (\d+)( \(default\))?$")
DEFAULT_RESULTS = (DEFAULT_OUT, TRANSFER_OUT)
DEFAULT_FRONTIER_OUT = Path("benchmarks/results/frontier.json")
FLAT_RULE = 0.5  # issue 10, line 1: the flat-region energy ratio of an invisible protection


@dataclass(frozen=True)
class Point:
    label: str
    values: dict[str, float]  # a row's pooled ("all") numbers


def generator_curve(rows: dict[str, dict]) -> list[Point]:
    """The generator's η-curve, in η order."""
    found = [(int(m.group(1)), Point(label, row["all"])) for label, row in rows.items() if (m := GENERATOR_ROW.match(label))]
    return [point for _, point in sorted(found, key=lambda pair: pair[0])]


def references(rows: dict[str, dict]) -> list[Point]:
    """Every per-image optimisation row, in the file's order."""
    return [Point(label, row["all"]) for label, row in rows.items() if "PGD" in label]


def interpolate(curve: list[Point], measure: str, sign: float, damage: str, at: float) -> float | None:
    """The curve's ``damage`` where its visibility ``sign · measure`` equals ``sign · at``, linear between the
    two neighbouring points; None outside the curve's range or when a point lacks the damage."""
    points = sorted(((sign * p.values[measure], p.values.get(damage)) for p in curve), key=lambda point: point[0])
    x = sign * at
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            if y0 is None or y1 is None:
                return None
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def compare(rows: dict[str, dict], curve_rows: dict[str, dict] | None = None) -> list[dict]:
    """One record per reference row: its visibility and damage, and per measure and damage kind the
    generator's damage at the same visibility and the ratio generator / reference. ``curve_rows``: take
    the generator's η-curve from these rows instead (another checkpoint scored on the same images)."""
    curve = generator_curve(rows if curve_rows is None else curve_rows)
    if len(curve) < 2:
        raise ValueError(f"need the generator's η-curve (two 'generator η N' rows or more), found {len(curve)}")
    records = []
    for ref in references(rows):
        cells = {}
        for measure, _, sign in MEASURES:
            for damage, _ in DAMAGES:
                theirs = ref.values.get(damage)
                ours = interpolate(curve, measure, sign, damage, ref.values[measure]) if theirs is not None else None
                cells[f"{damage}@{measure}"] = {"generator": ours, "reference": theirs,
                                                 "ratio": None if ours is None else ours / max(theirs, 1e-9)}
        visibility = {m: ref.values[m] for m, _, _ in MEASURES} | {"flat_ratio": ref.values.get("flat_ratio")}
        records.append({"reference": ref.label, "visibility": visibility, "cells": cells})
    return records


def keeps_flat_rule(record: dict) -> bool:
    """Whether a reference keeps the flat-region rule (ratio ≤ FLAT_RULE); a row without the measure does not count."""
    flat = record["visibility"].get("flat_ratio")
    return flat is not None and flat <= FLAT_RULE


def wins(records: list[dict]) -> dict[str, list[int]]:
    """Per cell kind, [comparisons the generator wins (ratio > 1), comparisons possible]."""
    tally: dict[str, list[int]] = {}
    for record in records:
        for key, cell in record["cells"].items():
            if cell["ratio"] is not None:
                won, total = tally.get(key, [0, 0])
                tally[key] = [won + (cell["ratio"] > 1), total + 1]
    return tally


def table(records: list[dict]) -> list[str]:
    def cell(values: dict) -> str:
        return "—" if values["ratio"] is None else f"{values['ratio']:.2f}× ({values['generator']:.3f} vs {values['reference']:.3f})"

    header = ["reference row", "its LPIPS-alex / VGG / PSNR / flat ratio"] + [f"{what} at equal {name}" for damage, what in DAMAGES
                                                                  for _, name, _ in MEASURES]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for record in records:
        v = record["visibility"]
        flat = "n/m" if v.get("flat_ratio") is None else f"{v['flat_ratio']:.2f}"
        seen = f"{v['lpips']:.3f} / {v['lpips_vgg']:.3f} / {v['psnr']:.1f} / {flat}"
        cells = [cell(record["cells"][f"{damage}@{measure}"]) for damage, _ in DAMAGES for measure, _, _ in MEASURES]
        lines.append("| " + " | ".join([record["reference"], seen, *cells]) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frontier", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="*", default=list(DEFAULT_RESULTS), help="noise_control results files")
    parser.add_argument("--curves", type=Path, nargs="*", default=None, metavar="FILE",
                        help="take the generator's η-curve from these results files instead, one per RESULTS file in order "
                             "(another checkpoint scored on the same images: noise_control --rows generator --generator DIR)")
    parser.add_argument("--out", type=Path, default=DEFAULT_FRONTIER_OUT)
    args = parser.parse_args(argv)
    if args.curves is not None and len(args.curves) != len(args.results):
        parser.error(f"--curves needs one file per results file ({len(args.results)}), got {len(args.curves)}")
    report = {}
    for index, path in enumerate(args.results):
        curve_path = None if args.curves is None else args.curves[index]
        for needed in (path, curve_path):
            if needed is not None and not needed.is_file():
                parser.error(f"{needed}: no such results file (run python -m benchmarks.noise_control first)")
        payload = json.loads(path.read_text())
        curve_rows = None
        if curve_path is not None:
            other = json.loads(curve_path.read_text())
            if other["images"] != payload["images"]:
                parser.error(f"{curve_path} scored other images than {path}: the curves would not be comparable")
            curve_rows = other["rows"]
        try:
            records = compare(payload["rows"], curve_rows)
        except ValueError as error:
            parser.error(f"{curve_path or path}: {error}")
        mimic = payload.get("mimic", "TAEF2")
        tally, ruled = wins(records), wins([record for record in records if keeps_flat_rule(record)])
        report[str(path)] = {"mimic": mimic, "images": len(payload["images"]), "generator_curve": str(curve_path or path),
                             "comparisons": records, "wins": tally, "wins_flat_rule": ruled}
        print(f"\n{path} — {len(payload['images'])} images, scored through {mimic}; generator curve from {curve_path or path}; "
              "generator's damage at each reference's visibility ÷ the reference's damage (> 1: the generator's frontier is above it)")
        print("\n".join(table(records)))
        print("wins (generator above / comparable): " + ", ".join(f"{k} {w}/{t}" for k, (w, t) in tally.items()))
        print(f"wins over the references that keep the flat-region rule (ratio ≤ {FLAT_RULE:g}): "
              + (", ".join(f"{k} {w}/{t}" for k, (w, t) in ruled.items()) or "none comparable"))
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
