"""benchmarks.space_latency's tables, medians and goal lines (its logic, not its timings: no Space is started)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import space_latency


def _results(verdict_1024: float | None, page_s: float | None, shown_1024: float | None = 0.5) -> dict:
    runs = [{"arrived_s": 0.4, "shown_s": shown_1024, "verdict_s": verdict_1024}, {"arrived_s": 0.6, "shown_s": 0.7, "verdict_s": None}]
    stages = [{"total": 0.3, "until shown": 0.35, "verdict": 2.0}, {"total": 0.5, "until shown": 0.55, "verdict": 4.0}]
    return {
        "machine": "test CPU", "runs": 2, "load_before": [0.1], "load_after": [0.2],
        "startup": {"page_s": page_s, "page_all_s": [page_s] if page_s is not None else [], "first_result_s": 9.0},
        "rows": [space_latency.summarise(1024, runs, stages)],
    }


def test_sizes_are_parsed_and_nonsense_refused() -> None:
    assert space_latency.parse_sizes("512,1024") == [512, 1024]
    for bad in ("", "16", "512,abc"):
        with pytest.raises((argparse.ArgumentTypeError, ValueError)):
            space_latency.parse_sizes(bad)


def test_a_row_holds_the_medians_of_what_was_measured_and_every_run() -> None:
    row = _results(0.9, 4.0)["rows"][0]
    assert row["size"] == "1024²" and row["runs"] == 2
    assert row["arrived_s"] == pytest.approx(0.5) and row["shown_s"] == pytest.approx(0.6)
    assert row["verdict_s"] == pytest.approx(0.9)  # a run without a verdict is left out, not counted as 0
    assert row["shown_all_s"] == [0.5, 0.7] and row["verdict_all_s"] == [0.9, None]
    assert list(row["handler_s"]) == ["total", "until shown", "verdict"]  # the handler's order
    assert row["handler_s"]["verdict"] == pytest.approx(3.0)


@pytest.mark.parametrize(("shown", "verdict", "page", "expected"), [
    (0.5, 0.9, 4.0, ["met", "met", "met"]),
    (0.5, 1.2, 6.0, ["met", "NOT MET", "NOT MET"]),  # the image shown at 0.6 s (median), the verdict streamed after 1 s
    (1.5, 1.2, 4.0, ["NOT MET", "NOT MET", "met"]),  # median of 1.5 and 0.7: 1.1 s
    (None, None, None, ["met", "NOT MET", "NOT MET"]),  # a run without a number is left out: the other run's 0.7 s
])
def test_each_goal_is_met_or_not_with_its_number(shown, verdict, page, expected) -> None:
    lines = space_latency.goal_lines(_results(verdict, page, shown))
    assert [line.split()[0] if not line.strip().startswith("NOT") else "NOT MET" for line in lines] == expected
    assert "1024² click to protected image shown (verdict streamed after it) ≤ 1.0 s" in lines[0]
    if shown == 0.5:
        assert "measured 0.60 s" in lines[0]
    assert "1024² click to verdict shown ≤ 1.0 s" in lines[1] and "start-up" in lines[2]
    if verdict is not None:
        assert f"measured {verdict:.2f} s" in lines[1]


def test_the_report_has_one_table_row_per_size_and_the_goals() -> None:
    report = space_latency.markdown(_results(1.5, 7.0))
    assert "| 1024² | 0.50 s | 0.60 s | 1.50 s | 0.40/0.50/1.50, 0.60/0.70/– |" in report
    assert "| 1024² | 0.40 s | 0.45 s | 3.00 s |" in report  # the handler's stages, median
    assert "page answers HTTP 200 after 7.00 s" in report and "NOT MET" in report


def test_each_run_uploads_other_bytes_of_the_same_size(tmp_path) -> None:
    from PIL import Image
    import io

    source = tmp_path / "photo.png"
    Image.effect_noise((200, 160), 60).convert("RGB").save(source)
    uploads = [space_latency.photo_jpeg(64, source, shift=shift) for shift in range(64)]
    assert len(set(uploads)) == 64  # no upload cache of an earlier run serves the next, up to 63 runs
    assert {Image.open(io.BytesIO(data)).size for data in uploads} == {(64, 64)}
    with pytest.raises(ValueError):
        space_latency.photo_jpeg(64, source, shift=64)


def test_the_space_memory_report_judges_the_peak_growth_per_concurrent_request() -> None:
    from benchmarks import space_memory

    gb = space_memory.GB
    results = {"machine": "test CPU", "size": "5600×4200", "upload_mb": 9.0, "requests": 4, "concurrency": 2,
               "load_before": [0.1], "ok": 4, "wall_s": 30.0, "idle_rss": 1.0 * gb, "peak": 3.0 * gb, "after_rss": 1.2 * gb,
               "peak_growth_per_request": 1.0 * gb}
    text = space_memory.report(results)
    assert "| peak while serving (VmHWM) | 3.00 GB |" in text and space_memory.goal_line(results).strip().startswith("met")
    assert space_memory.goal_line({**results, "peak_growth_per_request": 1.6 * gb}).strip().startswith("NOT MET")
    own = space_memory.read_status(__import__("os").getpid())
    assert set(own) == {"VmRSS", "VmHWM"} and 0 < own["VmRSS"] <= own["VmHWM"]  # this process's, in bytes
