"""The markdown report of ``python -m train.evaluate``: tables from its results JSON (no computation
beyond formatting; the numbers come from ``train/evaluate.py`` and ``train/compare.py``). The same
text goes to stdout, ``--markdown`` and the model card's evaluation section (``--card``)."""

from __future__ import annotations

from fastprotect.evaluation import TRANSFORMS


def markdown(results: dict) -> str:
    """The report of one evaluation: ``results`` as ``evaluate()`` returns it (and ``--out`` stores it)."""
    domains = sorted(set(results["domains"])) + ["all"]
    counts = ", ".join(f"{d} {results['domains'].count(d)}" for d in sorted(set(results["domains"])))
    lines = [(f"Held-out images: {len(results['images'])} ({counts}), "
             f"{results['size']}², η = {results['eta_levels']:g}/255, {results['threads']} torch threads, "
             f"evaluation wall time {results['wall_time_s']:.0f} s."), ""]
    lines += ["| method | LPIPS ↓ | PSNR | SSIM | L∞ | pull ↓ | damage ↑ | s/img |", "|---|---|---|---|---|---|---|---|"]
    for label, row in results["rows"].items():
        a = row["summary"]["all"]
        lines.append(f"| {label} | {a['lpips']:.4f} | {a['psnr']:.2f} | {a['ssim']:.4f} | {a['linf']:.1f} | {a['pull']:.3f} | {a['damage']:.4f} | {row['latency_s']:.3f} |")
    lines += ["", "Per domain (LPIPS / mimic damage):", "", "| method | " + " | ".join(domains) + " |", "|---" * (len(domains) + 1) + "|"]
    for label, row in results["rows"].items():
        cells = [f"{row['summary'][d]['lpips']:.3f} / {row['summary'][d]['damage']:.3f}" for d in domains]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for c in results.get("comparisons", []):
        won = [d for d, w in c["per_domain"].items() if d != "all" and w["win"]]
        lines += ["", (f"**{c['a']}** vs **{c['b']}**: higher damage at equal or lower LPIPS in {c['domains_won']} of {c['domains']} domains"
                  f" ({', '.join(won) or 'none'}).")]
    m = results.get("pgd_match")
    if m:
        lines += ["", (f"PGD (per image, from δ = 0, step η/4) vs `{m['reference']}`: "
                  f"pull matched at {m['steps_matching_pull']} steps (latency ratio {_fmt(m['latency_ratio_pull'])}), "
                  f"damage matched at {m['steps_matching_damage']} steps (latency ratio {_fmt(m['latency_ratio_damage'])}); "
                  f"measured at {m['measured_steps']} steps (None = not reached).")]
    if "robustness" in results:
        lines += ["", "Robustness (all images; pull ↓ / damage ↑ after the transform):", "",
                  "| method | none | " + " | ".join(TRANSFORMS) + " |", "|---" * (len(TRANSFORMS) + 2) + "|"]
        for label, per in results["robustness"].items():
            base = results["rows"][label]["summary"]["all"]
            cells = [f"{per[t]['all']['pull']:.3f} / {per[t]['all']['damage']:.4f}" for t in TRANSFORMS]
            lines.append(f"| {label} | {base['pull']:.3f} / {base['damage']:.4f} | " + " | ".join(cells) + " |")
    if "curves" in results:
        lines += ["", "Damage vs LPIPS over η (all images):", "", "| curve | " + " | ".join(f"η={p['eta_levels']:g}" for p in next(iter(results['curves'].values()))) + " |",
                  "|---" * (len(next(iter(results['curves'].values()))) + 1) + "|"]
        for key, points in results["curves"].items():
            lines.append(f"| {key} | " + " | ".join(f"LPIPS {p['lpips']:.4f}, dmg {p['damage']:.4f}" for p in points) + " |")
        keys = list(results["curves"])
        lines += ["", "Damage at equal LPIPS (linear interpolation; '–' = outside that curve's range):", "",
                  "| LPIPS | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for entry in results["equal_lpips"]:
            lines.append(f"| {entry['lpips']:.4f} | " + " | ".join("–" if entry[k] is None else f"{entry[k]:.4f}" for k in keys) + " |")
    for c in results.get("equal_lpips_by_domain", []):
        names = sorted(c["per_domain"])
        lines += ["", (f"Per domain at equal LPIPS: **{c['a']}** at η = {c['eta_levels']:g} vs **{c['b']}** interpolated to the same LPIPS "
                  f"(damage A / B; A higher in {c['domains_won']} of {c['domains']} domains):"), "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        cells = []
        for d in names:
            v = c["per_domain"][d]
            theirs = "–" if v["damage"][1] is None else f"{v['damage'][1]:.4f}"
            cells.append(f"LPIPS {v['lpips']:.3f}: {v['damage'][0]:.4f} / {theirs}")
        lines.append("| damage | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}×"
