"""Make the plots of docs/EVALUATION.md from the committed results files.

    python -m scripts.make_plots        # reads benchmarks/results/, writes docs/images/eval_*.png

Every plot is drawn from a ``python -m benchmarks.noise_control`` results file (its ``rows``: name →
domain → measures), so when the numbers change, rerunning this command brings the pictures with them.
Series are found by their row names (the benchmark's own wording); a required series that is missing is
an error naming it, never a silently thinner plot.

- ``eval_frontier.png``: damage against each visibility measure (LPIPS-alex, LPIPS-VGG, PSNR) for the
  default generator's η-curve, the mixture, per-image PGD and random noise.
- ``eval_domains.png``: the damage ÷ matched-noise ratio per domain, with the 2× bar.
- ``eval_robustness.png``: the share of the damage left after JPEG q75 and after resize-half, against η.
- ``eval_upload.png``: the upload-size evaluation (``python -m benchmarks.upload_eval`` results, its ``default`` row):
  each image's damage ÷ same-PSNR noise damage per domain at one size, and the per-domain ratios of the same images
  at every size the ``--upload-sizes`` files hold.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the VMs or in CI
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_MAIN = RESULTS / "noise_control_cpu_taef2.json"
DEFAULT_HELDOUT = RESULTS / "noise_control_generator_heldout47.json"
DEFAULT_UPLOAD = RESULTS / "upload_eval_512_default.json"
# The same 4 images (one per domain, seed 0) at each long side, one file per run; a later file's size wins.
DEFAULT_UPLOAD_SIZES = tuple(RESULTS / name for name in (
    "upload_eval_512_same4_as_1024.json", "upload_eval_1024_operating_resolution.json", "upload_eval_2048_same4.json"))
DEFAULT_OUT = ROOT / "docs" / "images"
DOMAINS = ("cartoon", "face", "object", "painting")

# The goals of issue 10, drawn as lines so a reader sees which side of each bar a point falls.
GOAL_RATIO_PER_DOMAIN = 2.0
GOAL_KEPT = 0.70
# Below this the matched noise barely moves the measure and a ratio says nothing (the docs' "n/m").
MEASURABLE_NOISE_DAMAGE = 0.002
GOAL_VISIBILITY = {"lpips": 0.06, "lpips_vgg": 0.15, "psnr": 35.0}


@dataclass(frozen=True)
class Series:
    """One method's rows: ``pattern`` matches a row name and captures its η (in 1/255)."""

    label: str
    pattern: str
    style: dict
    required: bool = True


# Row names as benchmarks.noise_control writes them. The generator's η 8 row carries "(default)".
SERIES = (
    Series("generator (default), η-curve", r"^generator η (\d+)(?: \(default\))?$", {"color": "C0", "marker": "o"}),
    Series("mixture (paper), adaptive strength", r"^mixture, adaptive strength, η (\d+)$", {"color": "C1", "marker": "s"}),
    Series("per-image PGD, 8 steps", r"^per-image PGD, 8 steps, η (\d+)$", {"color": "C3", "marker": "^"}),
    Series(
        "EOT-PGD (JPEG in half the steps)", r"^EOT-PGD .*, 8 steps, η (\d+)$",
        {"color": "C3", "marker": "v", "linestyle": ":", "markerfacecolor": "none"}, required=False,
    ),
    Series("random sign noise", r"^random ±(\d+) sign noise$", {"color": "0.45", "marker": "x", "linestyle": "--"}),
)
DEFAULT_ETA = 8  # the generator's η 8 point is ringed on every plot


class MissingSeries(ValueError):
    """A results file lacks rows a plot needs."""


def load_rows(path: Path) -> dict[str, dict]:
    """The ``rows`` mapping of a noise_control results file."""
    data = json.loads(Path(path).read_text())
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, dict):
        raise MissingSeries(f"{path} is not a benchmarks.noise_control results file (it has no 'rows' mapping).")
    return rows


def series_points(rows: dict[str, dict], series: Series) -> list[tuple[int, dict]]:
    """(η, row) pairs of ``series`` sorted by η; an error naming the series when a required one is absent."""
    points = []
    for name, row in rows.items():
        match = re.match(series.pattern, name)
        if match:
            points.append((int(match.group(1)), row))
    if series.required and not points:
        raise MissingSeries(f"The results have no rows for the series '{series.label}' (row names matching {series.pattern}).")
    return sorted(points, key=lambda point: point[0])


def _pooled(row: dict, key: str) -> float | None:
    value = row.get("all", {}).get(key)
    return None if value is None else float(value)


def plot_frontier(rows: dict[str, dict], out: Path, note: str) -> Path:
    """Damage against LPIPS-alex, LPIPS-VGG and PSNR, one line per method (η-curve), pooled over the images."""
    measures = (("lpips", "LPIPS-alex (less visible ←)"), ("lpips_vgg", "LPIPS-VGG (less visible ←)"), ("psnr", "PSNR dB, axis reversed (less visible ←)"))
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.8), sharey=True)
    for axis, (key, title) in zip(axes, measures):
        for series in SERIES:
            points = [(eta, _pooled(row, key), _pooled(row, "damage"), row) for eta, row in series_points(rows, series)]
            points = [point for point in points if point[1] is not None and point[2] is not None]
            if not points:
                continue
            axis.plot([p[1] for p in points], [p[2] for p in points], label=series.label, **series.style)
            for eta, x, y, _ in points:
                axis.annotate(f"{eta}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color=series.style["color"])
            if series is SERIES[0]:
                default = [p for p in points if p[0] == DEFAULT_ETA]
                if default:
                    axis.plot(default[0][1], default[0][2], marker="o", markersize=13, markerfacecolor="none", color="C0")
        axis.axvline(GOAL_VISIBILITY[key], color="0.6", linewidth=0.8, linestyle="-.")
        axis.set_xlabel(title)
        axis.grid(alpha=0.3)
    axes[2].invert_xaxis()  # higher PSNR is less visible: keep "less visible" on the left of every panel
    axes[0].set_ylabel("mimic damage (LPIPS of the round trip, − clean)")
    axes[0].legend(fontsize=8, loc="upper left")
    figure.suptitle(f"Damage against visibility (numbers on points: η in /255; dash-dot: the visibility bar; ringed: the default η 8)\n{note}", fontsize=10)
    figure.tight_layout()
    return _save(figure, out / "eval_frontier.png")


def _named_row(rows: dict[str, dict], series: Series, eta: int) -> dict:
    for point_eta, row in series_points(rows, series):
        if point_eta == eta:
            return row
    raise MissingSeries(f"The results have no '{series.label}' row at η {eta}.")


def _ratio(measures: dict) -> float | None:
    """The damage ÷ matched-noise ratio, or None where the noise damage is too small to divide by."""
    noise = measures.get("noise_damage")
    if measures.get("ratio") is None or (noise is not None and noise < MEASURABLE_NOISE_DAMAGE):
        return None
    return float(measures["ratio"])


def plot_domains(rows: dict[str, dict], out: Path, note: str, heldout: dict[str, dict] | None = None) -> Path:
    """Damage ÷ matched-noise damage per domain at η 8 (and the generator on the larger held-out sample)."""
    generator, mixture, pgd, _, noise = SERIES
    bars = [
        ("generator η 8 (default)", _named_row(rows, generator, 8), "C0"),
        ("mixture η 8", _named_row(rows, mixture, 8), "C1"),
        ("per-image PGD η 4", _named_row(rows, pgd, 4), "C3"),
        ("per-image PGD η 8", _named_row(rows, pgd, 8), "#f4a3a3"),
        ("random ±4 noise", _named_row(rows, noise, 4), "0.6"),
    ]
    if heldout is not None:
        bars.insert(1, ("generator η 8, all 47 held-out", _named_row(heldout, generator, 8), "#8fbce6"))
    groups = list(DOMAINS) + ["all"]
    width = 0.8 / len(bars)
    figure, axis = plt.subplots(figsize=(11, 4.6))
    for index, (label, row, colour) in enumerate(bars):
        xs = [group + (index - (len(bars) - 1) / 2) * width for group in range(len(groups))]
        values = [_ratio(row.get(domain, {})) for domain in groups]
        heights = [0.0 if value is None else float(value) for value in values]
        drawn = axis.bar(xs, heights, width=width, label=label, color=colour)
        for bar, value in zip(drawn, values):
            axis.annotate("n/m" if value is None else f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          textcoords="offset points", xytext=(0, 2), ha="center", fontsize=6.5)
    axis.axhline(GOAL_RATIO_PER_DOMAIN, color="k", linewidth=0.9, linestyle="--", label="bar: 2× in every domain")
    axis.set_xticks(range(len(groups)), [*DOMAINS, "pooled"])
    axis.set_ylabel("damage ÷ damage of noise with the same energy")
    axis.legend(fontsize=8, ncol=2)
    axis.grid(axis="y", alpha=0.3)
    axis.set_title(f"Efficiency per domain (n/m: noise damage too small to measure)\n{note}", fontsize=10)
    figure.tight_layout()
    return _save(figure, out / "eval_domains.png")


def plot_robustness(rows: dict[str, dict], out: Path, note: str) -> Path:
    """The share of the damage left after JPEG q75 and after resize-half, per method, against η."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    for axis, (key, title) in zip(axes, (("survives_jpeg75", "after JPEG q75"), ("survives_resize-half", "after resize to half and back"))):
        for series in SERIES:
            points = [(eta, _pooled(row, key)) for eta, row in series_points(rows, series)]
            points = [(eta, value) for eta, value in points if value is not None]
            if points:
                axis.plot([p[0] for p in points], [100 * p[1] for p in points], label=series.label, **series.style)
        axis.axhline(100 * GOAL_KEPT, color="k", linewidth=0.9, linestyle="--", label="bar: 70 % kept")
        axis.set_xlabel("η (/255)")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("share of the damage kept (%)")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Robustness: damage kept, applied to protected and clean images alike\n{note}", fontsize=10)
    figure.tight_layout()
    return _save(figure, out / "eval_robustness.png")


# ------------------------------------------------------------------------------------------- upload size
def upload_default_row(path: Path) -> dict[int, dict]:
    """Long side → the ``default`` row's entry (``summary``, ``per_image``) of a benchmarks.upload_eval results file."""
    data = json.loads(Path(path).read_text())
    rows = data.get("rows", {}).get("default") if isinstance(data, dict) else None
    if not isinstance(rows, dict) or not rows:
        raise MissingSeries(f"{path} has no 'default' row of benchmarks.upload_eval (the shipped default's results).")
    for size, entry in rows.items():
        per_image = entry.get("per_image", {}) if isinstance(entry, dict) else {}
        if not isinstance(entry, dict) or "summary" not in entry or not {"damage", "noise_damage"} <= set(per_image):
            raise MissingSeries(f"{path}: the default row at {size} px lacks its summary or per-image damage.")
    return {int(size): entry for size, entry in rows.items()}


def plot_upload(per_image_file: Path, size_files: list[Path], out: Path) -> Path:
    """Left: each image's ratio per domain at the per-image file's size (dots), the domain's pooled ratio (bar).
    Right: the per-domain and pooled ratios of the size files' images at each long side."""
    by_size = upload_default_row(per_image_file)
    size, entry = min(by_size.items())
    names = json.loads(Path(per_image_file).read_text()).get("images", [])
    damage, noise = entry["per_image"]["damage"], entry["per_image"]["noise_damage"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.3]})
    groups = [*DOMAINS, "all"]
    for index, domain in enumerate(groups):
        pooled = _ratio(entry["summary"].get(domain, {}))
        left.bar(index, pooled or 0.0, width=0.6, color="#8fbce6")
        picked = [i for i, name in enumerate(names) if domain == "all" or name.split("/")[0] == domain]
        ratios = [damage[i] / noise[i] for i in picked if noise[i] > MEASURABLE_NOISE_DAMAGE]
        left.scatter([index] * len(ratios), ratios, color="C0", s=14, zorder=3)
        left.annotate(f"{pooled:.2f}" if pooled else "n/m", (index, pooled or 0.0), textcoords="offset points",
                      xytext=(14, 0), fontsize=7)
        left.annotate(f"{len(ratios)} of {len(picked)}", (index, 0.3), ha="center", fontsize=7, color="0.35")
    left.set_yscale("log")
    left.set_ylim(0.25, None)
    left.axhline(GOAL_RATIO_PER_DOMAIN, color="k", linewidth=0.9, linestyle="--", label="bar: 2× (each domain, 90 % of images)")
    left.set_xticks(range(len(groups)), [*DOMAINS, "pooled"])
    left.set_ylabel("damage ÷ damage of same-PSNR noise (log)")
    left.legend(fontsize=8, loc="upper left")
    left.set_title(f"{Path(per_image_file).name}: {len(names)} images at {size} px\n"
                   f"bars: pooled ratio; dots: each image where noise's damage is measurable (count below)", fontsize=9)
    sized: dict[int, dict] = {}
    for path in size_files:
        if Path(path).exists():
            sized.update(upload_default_row(path))
    width = 0.8 / max(len(sized), 1)
    for index, (long_side, row) in enumerate(sorted(sized.items())):
        xs = [g + (index - (len(sized) - 1) / 2) * width for g in range(len(groups))]
        values = [_ratio(row["summary"].get(domain, {})) for domain in groups]
        drawn = right.bar(xs, [v or 0.0 for v in values], width=width, label=f"long side {long_side} px", color=f"C{index}")
        for bar, value in zip(drawn, values):
            right.annotate("n/m" if value is None else f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                           textcoords="offset points", xytext=(0, 2), ha="center", fontsize=6.5)
    right.axhline(GOAL_RATIO_PER_DOMAIN, color="k", linewidth=0.9, linestyle="--")
    right.set_xticks(range(len(groups)), [*DOMAINS, "pooled"])
    right.grid(axis="y", alpha=0.3)
    right.legend(fontsize=8)
    right.set_title("the same images (one per domain) at each long side; above 512 px upscaled from ≤ 768 px", fontsize=9)
    figure.suptitle("Upload size: whole dev images through Protector.protect with no options, damage through TAEF2", fontsize=10)
    figure.tight_layout()
    return _save(figure, out / "eval_upload.png")


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fixed DPI and no metadata date, so an unchanged results file gives an unchanged PNG (no git noise).
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)
    return path


def make_plots(main: Path, out: Path, heldout: Path | None = None, upload: Path | None = None,
               upload_sizes: list[Path] | None = None) -> list[Path]:
    """Draw the three plots from ``main`` (and the generator's larger sample from ``heldout``) into ``out``, and the
    upload-size plot from ``upload`` (and ``upload_sizes``) when given."""
    rows = load_rows(main)
    if upload is not None:  # checked before anything is drawn, like the series below
        upload_default_row(upload)
    for series in SERIES:  # every required series checked before anything is drawn: no half-written set of plots
        series_points(rows, series)
    data = json.loads(Path(main).read_text())
    images, size = len(data.get("images", [])), data.get("size")
    note = f"{Path(main).name}: {images} images at {size}², against {str(data.get('mimic', 'TAEF2')).split(' ')[0]}"
    heldout_rows = load_rows(heldout) if heldout is not None else None
    return [
        plot_frontier(rows, out, note),
        plot_domains(rows, out, note + ("; pale blue: " + Path(heldout).name if heldout is not None else ""), heldout_rows),
        plot_robustness(rows, out, note),
    ] + ([plot_upload(upload, list(upload_sizes or []), out)] if upload is not None else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_MAIN, help="noise_control results file with every method's rows")
    parser.add_argument("--heldout", default=str(DEFAULT_HELDOUT),
                        help="results file of the generator on a larger sample, drawn beside it per domain ('' to leave out)")
    parser.add_argument("--upload", default=str(DEFAULT_UPLOAD),
                        help="benchmarks.upload_eval results drawn image by image ('' to leave the upload plot out)")
    parser.add_argument("--upload-sizes", type=Path, nargs="*", default=list(DEFAULT_UPLOAD_SIZES),
                        help="upload_eval results of the same images at other long sides (missing files are skipped)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder the PNGs are written to")
    args = parser.parse_args(argv)
    heldout = Path(args.heldout) if args.heldout else None
    upload = Path(args.upload) if args.upload else None
    try:
        written = make_plots(args.results, args.out, heldout, upload, args.upload_sizes)
    except (MissingSeries, OSError, json.JSONDecodeError) as error:
        print(f"error: {error}")
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
