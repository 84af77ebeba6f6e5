"""train/compare.py: the evaluation's comparison maths (equal η per domain, equal LPIPS along the
η-curves), pure functions on hand-made rows and curves."""

from __future__ import annotations

import pytest

from train.compare import _interpolate, compare, equal_lpips, equal_lpips_by_domain


def row(**domains: tuple[float, float]) -> dict:
    """A results row from domain=(lpips, damage) pairs."""
    return {"summary": {d: {"lpips": lp, "damage": dm} for d, (lp, dm) in domains.items()}}


def test_a_domain_is_won_with_more_damage_at_equal_or_lower_lpips() -> None:
    rows = {
        "A": row(face=(0.10, 0.12), object=(0.10, 0.12), painting=(0.20, 0.30), cartoon=(0.10, 0.05), all=(0.1, 0.2)),
        "B": row(face=(0.10, 0.11), object=(0.12, 0.10), painting=(0.15, 0.10), cartoon=(0.10, 0.05), all=(0.2, 0.1)),
    }
    result = compare(rows, "A", "B")
    won = {d: v["win"] for d, v in result["per_domain"].items()}
    # equal LPIPS counts; more visible never wins; equal damage is not a win
    assert won == {"face": True, "object": True, "painting": False, "cartoon": False, "all": True}
    assert result["domains_won"] == 2 and result["domains"] == 4  # "all" is not a domain
    assert result["per_domain"]["painting"]["damage"] == [0.30, 0.10] and result["per_domain"]["painting"]["lpips"] == [0.20, 0.15]
    assert (result["a"], result["b"]) == ("A", "B")


def test_interpolation_along_a_curve() -> None:
    curve = [{"lpips": 0.3, "damage": 0.6}, {"lpips": 0.1, "damage": 0.2}, {"lpips": 0.2, "damage": 0.3}]  # any order
    assert _interpolate(curve, 0.15) == pytest.approx(0.25)
    assert _interpolate(curve, 0.25) == pytest.approx(0.45)
    assert _interpolate(curve, 0.1) == pytest.approx(0.2) and _interpolate(curve, 0.3) == pytest.approx(0.6)  # end points
    assert _interpolate(curve, 0.05) is None and _interpolate(curve, 0.31) is None  # no extrapolation
    assert _interpolate([{"lpips": 0.1, "damage": 0.2}, {"lpips": 0.1, "damage": 0.4}], 0.1) is None  # no slope, no answer
    assert _interpolate([{"lpips": 0.1, "damage": 0.2}], 0.1) is None


def test_equal_lpips_lists_the_levels_where_two_curves_are_defined() -> None:
    curves = {
        "full": [{"lpips": 0.1, "damage": 0.1}, {"lpips": 0.3, "damage": 0.3}],
        "UAP": [{"lpips": 0.2, "damage": 0.1}, {"lpips": 0.4, "damage": 0.5}],
    }
    table = equal_lpips(curves)
    assert [entry["lpips"] for entry in table] == [0.2, 0.3]  # 0.1 and 0.4 lie on one curve only
    assert table[0]["full"] == pytest.approx(0.2) and table[0]["UAP"] == pytest.approx(0.1)
    assert table[1]["full"] == pytest.approx(0.3) and table[1]["UAP"] == pytest.approx(0.3)


def test_per_domain_comparison_is_made_at_equal_lpips_not_equal_eta() -> None:
    def point(eta, face, paint):
        return {"eta_levels": eta, "by_domain": {"face": dict(zip(("lpips", "damage"), face)), "painting": dict(zip(("lpips", "damage"), paint))}}

    # A is less visible at η = 8 than B; on faces it is more damaging than B *at A's LPIPS*, though
    # less damaging than B at η = 8; on paintings its LPIPS lies outside B's curve
    curves = {
        "full": [point(4, (0.05, 0.05), (0.01, 0.01)), point(8, (0.10, 0.09), (0.02, 0.02))],
        "UAP": [point(4, (0.06, 0.04), (0.05, 0.05)), point(8, (0.14, 0.12), (0.10, 0.10))],
    }
    result = equal_lpips_by_domain(curves, "full", "UAP", 8)
    face = result["per_domain"]["face"]
    assert face["lpips"] == 0.10 and face["damage"][1] == pytest.approx(0.08) and face["win"] is True
    assert result["per_domain"]["painting"]["win"] is None and result["per_domain"]["painting"]["damage"][1] is None
    assert result["domains_won"] == 1 and result["domains"] == 2 and result["eta_levels"] == 8
    with pytest.raises(ValueError, match="no point at η = 6"):  # a budget the curve was not measured at
        equal_lpips_by_domain(curves, "full", "UAP", 6)
