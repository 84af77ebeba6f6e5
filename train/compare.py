"""Comparison maths of the evaluation (pure functions on its JSON rows and curves; no model, no torch).

* :func:`compare`: per domain, does row A beat row B at equal η (higher mimic damage at equal or
  lower LPIPS)?
* :func:`equal_lpips`: every η-curve's damage at the LPIPS of each point of every other curve.
* :func:`equal_lpips_by_domain`: per domain, curve A's damage at one η against curve B's damage
  interpolated to the same LPIPS (the comparison at *equal LPIPS*).

A row is ``{"summary": {domain: {"lpips": float, "damage": float, ...}, ..., "all": {...}}}``; a
curve is a list of points ``{"eta_levels", "lpips", "damage", "by_domain": {domain: {"lpips",
"damage"}}}``, as ``python -m train.evaluate`` writes them.
"""

from __future__ import annotations

import itertools


def compare(rows: dict, a: str, b: str) -> dict:
    """Per domain: A wins when its mimic damage is higher at equal or lower LPIPS than B's."""
    wins = {}
    for domain, sa in rows[a]["summary"].items():
        sb = rows[b]["summary"][domain]
        wins[domain] = {"win": sa["damage"] > sb["damage"] and sa["lpips"] <= sb["lpips"],
                        "damage": [sa["damage"], sb["damage"]], "lpips": [sa["lpips"], sb["lpips"]]}
    domains = [d for d in wins if d != "all"]
    return {"a": a, "b": b, "per_domain": wins, "domains_won": sum(wins[d]["win"] for d in domains), "domains": len(domains)}


def _interpolate(points: list[dict], lpips: float) -> float | None:
    """Damage at a given LPIPS by linear interpolation along a curve (None outside its range)."""
    pts = sorted(points, key=lambda p: p["lpips"])
    for a, b in itertools.pairwise(pts):
        if a["lpips"] <= lpips <= b["lpips"] and b["lpips"] > a["lpips"]:
            w = (lpips - a["lpips"]) / (b["lpips"] - a["lpips"])
            return a["damage"] + w * (b["damage"] - a["damage"])
    return None


def equal_lpips(curves: dict[str, list[dict]]) -> list[dict]:
    """Every curve's damage at the LPIPS of each point of every other curve (where both are defined)."""
    out = []
    for level in sorted({p["lpips"] for points in curves.values() for p in points}):
        entry = {"lpips": level}
        for key, points in curves.items():
            entry[key] = _interpolate(points, level)
        if sum(v is not None for k, v in entry.items() if k != "lpips") >= 2:
            out.append(entry)
    return out


def equal_lpips_by_domain(curves: dict[str, list[dict]], a: str, b: str, eta_levels: float) -> dict:
    """Per domain: curve A's damage at its η = ``eta_levels`` point vs curve B's damage interpolated
    at the same LPIPS (the done-when comparison at *equal* LPIPS rather than equal η); A wins a
    domain when its damage is higher. None where that LPIPS is outside B's curve."""
    point = next((p for p in curves[a] if p["eta_levels"] == eta_levels), None)
    if point is None:
        raise ValueError(f"curve {a!r} has no point at η = {eta_levels:g} levels (measured at {[p['eta_levels'] for p in curves[a]]})")
    per_domain = {}
    for domain, at in point["by_domain"].items():
        other = [{"lpips": p["by_domain"][domain]["lpips"], "damage": p["by_domain"][domain]["damage"]} for p in curves[b]]
        theirs = _interpolate(other, at["lpips"])
        per_domain[domain] = {"lpips": at["lpips"], "damage": [at["damage"], theirs],
                              "win": None if theirs is None else at["damage"] > theirs}
    won = sum(bool(v["win"]) for v in per_domain.values())
    return {"a": a, "b": b, "eta_levels": eta_levels, "per_domain": per_domain, "domains_won": won, "domains": len(per_domain)}
