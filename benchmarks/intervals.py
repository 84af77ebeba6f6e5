"""How sure is a ratio? Bootstrap intervals of "damage ÷ same-PSNR noise damage", pooled and per domain.

    python -m benchmarks.intervals [RESULTS.json ...] [--rows SUBSTRING ...] [--per-domain N] [--difference ROW_A ROW_B]

Reads a results file of ``benchmarks.noise_control`` that holds per-image values (its ``per_image`` key,
written since 2026-12-01) and, for each row, draws images with replacement (scipy.stats.bootstrap, paired:
an image's damage and its noise damage stay together; percentile intervals, seeded) and recomputes the
table's statistic, the ratio of the mean damage to the mean noise damage. Per domain the draws stay within
the domain; pooled they come from all images. The table's ratio per domain rests on 4–13 images, so this is
what says whether a ratio of 1.96 is "below 2" or "2, give or take 1": the interval's lower end is the
number a claim of "≥ 2× in every domain" should rest on. ``P(≥ 2)``: the share of draws at or above 2.
``--per-domain N`` keeps the first N images of each domain, the sample ``noise_control --per-domain N`` draws
from the same list (so the 47-image file also answers for the 16-image table). Several files scored on the same
images can be read together (a later file's row whose label is taken is called "FILE-STEM: label");
``--difference A B`` bootstraps the ratio of row A minus that of row B with the *same* image draws for both (the
rows were measured on the same images): is A better than B beyond the sampling spread?

With a handful of images per domain a percentile interval is rough (few distinct resamples, and it cannot
reach beyond the sample's own extremes); it measures sampling spread, not the spread over images a user may
bring.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import bootstrap

from benchmarks.noise_control import DEFAULT_OUT, DOMAINS, MIN_MEAN_NOISE_DAMAGE

RESAMPLES = 9999
CONFIDENCE = 0.95
BAR = 2.0  # issue 10's per-domain goal: ≥ 2× the damage of same-PSNR noise


@dataclass(frozen=True)
class Interval:
    ratio: float  # on the sample itself (the table's number)
    low: float
    high: float
    share_at_bar: float  # share of the bootstrap draws with a ratio ≥ BAR
    images: int
    noise_damage: float = 1.0  # the sample's mean noise damage: below MIN_MEAN_NOISE_DAMAGE the table shows no ratio


def ratio_of_means(damage: np.ndarray, noise: np.ndarray, axis: int = -1) -> np.ndarray:
    """The table's statistic; noise damage below MIN_MEAN_NOISE_DAMAGE is clamped there (as the table, it is no ratio)."""
    return np.mean(damage, axis=axis) / np.maximum(np.mean(noise, axis=axis), MIN_MEAN_NOISE_DAMAGE)


def interval(damage: list[float], noise: list[float], *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
             seed: int = 0) -> Interval:
    """The ratio of mean damage to mean noise damage with its paired percentile bootstrap interval."""
    d, n = np.asarray(damage, dtype=float), np.asarray(noise, dtype=float)
    if d.shape != n.shape or d.size < 2:
        raise ValueError(f"need two equally long lists of at least 2 values, got {d.size} and {n.size}")
    result = bootstrap((d, n), ratio_of_means, paired=True, vectorized=True, n_resamples=resamples,
                       confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    draws = result.bootstrap_distribution
    return Interval(float(ratio_of_means(d, n)), float(result.confidence_interval.low), float(result.confidence_interval.high),
                    float(np.mean(draws >= BAR)), int(d.size), float(n.mean()))


def difference(a: dict[str, list[float]], b: dict[str, list[float]], *, resamples: int = RESAMPLES,
               confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """Ratio of row ``a`` minus ratio of row ``b`` on the same images, with a paired percentile interval
    (``share_at_bar`` here: the share of draws where A's ratio is the larger)."""
    arrays = [np.asarray(row[key], dtype=float) for row in (a, b) for key in ("damage", "noise_damage")]
    if len({x.size for x in arrays}) != 1 or arrays[0].size < 2:
        raise ValueError("the two rows need per-image values on the same images (at least 2)")

    def statistic(da, na, db, nb, axis=-1):
        return ratio_of_means(da, na, axis) - ratio_of_means(db, nb, axis)

    result = bootstrap(arrays, statistic, paired=True, vectorized=True, n_resamples=resamples, confidence_level=confidence,
                       method="percentile", rng=np.random.default_rng(seed))
    return Interval(float(statistic(*arrays)), float(result.confidence_interval.low), float(result.confidence_interval.high),
                    float(np.mean(result.bootstrap_distribution > 0)), int(arrays[0].size))


def groups(domains: list[str]) -> dict[str, list[int]]:
    """Each present domain's image indices, in DOMAINS order, then "all"."""
    return {group: [i for i, d in enumerate(domains) if group in (d, "all")] for group in [d for d in DOMAINS if d in domains] + ["all"]}


def row_intervals(per_image: dict[str, list[float]], domains: list[str], **options) -> dict[str, Interval]:
    """Pooled ("all") and per-domain intervals of one row's per-image values."""
    return {group: interval([per_image["damage"][i] for i in keep], [per_image["noise_damage"][i] for i in keep], **options)
            for group, keep in groups(domains).items()}


def first_per_domain(domains: list[str], count: int | None) -> list[int]:
    """Indices of the first ``count`` images of each domain (all when None), in the file's order."""
    return [i for i, d in enumerate(domains) if count is None or domains[: i + 1].count(d) <= count]


def interval_text(value: Interval) -> str:
    if value.noise_damage < MIN_MEAN_NOISE_DAMAGE:  # as in noise_control's table: noise barely moves the measure
        return f"n/m (noise damage {value.noise_damage:.4f})"
    return f"{value.ratio:.2f} [{value.low:.2f}, {value.high:.2f}] P(≥{BAR:g}) {value.share_at_bar:.0%}"


def read_rows(paths: list[Path]) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """The images and every row's per-image values of one or more results files scored on the same images."""
    images, rows = None, {}
    for path in paths:
        results = json.loads(path.read_text())
        if not results.get("per_image"):
            raise ValueError(f"{path} holds no per-image values: measure it again with python -m benchmarks.noise_control")
        if images is not None and results["images"] != images:
            raise ValueError(f"{path} scored other images than {paths[0]}: its rows cannot be compared with them")
        images = results["images"]
        for label, values in results["per_image"].items():
            rows[f"{path.stem}: {label}" if label in rows else label] = values
    return images, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.intervals", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="*", default=[DEFAULT_OUT])
    parser.add_argument("--rows", nargs="*", default=[], metavar="SUBSTRING", help="only rows whose label holds one of these")
    parser.add_argument("--per-domain", type=int, default=None, metavar="N", help="only the first N images of each domain")
    parser.add_argument("--difference", nargs=2, default=None, metavar=("ROW_A", "ROW_B"),
                        help="also the interval of ratio(A) − ratio(B), rows named as printed")
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--confidence", type=float, default=CONFIDENCE)
    args = parser.parse_args(argv)
    try:
        images, rows = read_rows(args.results)
    except (OSError, ValueError, KeyError) as error:
        parser.error(f"cannot read the results: {error}")
    if args.difference and (missing := [label for label in args.difference if label not in rows]):
        parser.error(f"no row {missing[0]!r}; rows: {', '.join(rows)}")
    keep = first_per_domain([name.split("/")[0] for name in images], args.per_domain)
    domains = [images[i].split("/")[0] for i in keep]
    rows = {label: {key: [v[i] for i in keep] for key, v in values.items()} for label, values in rows.items()}
    options = {"resamples": args.resamples, "confidence": args.confidence}
    present = [d for d in DOMAINS if d in domains]
    print(f"{', '.join(map(str, args.results))}: {len(domains)} images ({', '.join(f'{d} {domains.count(d)}' for d in present)}); "
          f"{args.confidence:.0%} paired percentile bootstrap, {args.resamples} draws; ratio [low, high] P(≥{BAR:g})\n")
    print("| row | pooled | " + " | ".join(present) + " |")
    print("| --- " * (2 + len(present)) + "|")
    for label, values in rows.items():
        if args.rows and not any(part in label for part in args.rows):
            continue
        found = row_intervals(values, domains, **options)
        print(f"| {label} | " + " | ".join(interval_text(found[d]) for d in ["all", *present]) + " |")
    if args.difference:
        a, b = (rows[label] for label in args.difference)
        cells = []
        for domain, keep in sorted(groups(domains).items(), key=lambda item: item[0] != "all"):
            found = difference(*({key: [row[key][i] for i in keep] for key in ("damage", "noise_damage")} for row in (a, b)), **options)
            cells.append(f"{found.ratio:+.2f} [{found.low:+.2f}, {found.high:+.2f}] A larger in {found.share_at_bar:.0%}")
        print(f"| {args.difference[0]} − {args.difference[1]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
