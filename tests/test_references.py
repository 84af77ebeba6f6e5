"""The verdict's clean half per upload: computed once, waited for, never trusted blindly, gone with age."""

from __future__ import annotations

import threading
import time

import pytest

from webapp import references as references_module
from webapp.references import CleanReferences


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_reference_is_computed_once_per_upload():
    calls = []
    references = CleanReferences()
    for _ in range(3):
        references.prepare("a.png", lambda: calls.append(1) or "ref-a")
    assert calls == [1] and references.get("a.png") == "ref-a"
    assert references.get("b.png") is None and references.get(None) is None


def test_a_click_during_the_computation_waits_for_it_instead_of_measuring_twice():
    started, release = threading.Event(), threading.Event()
    references = CleanReferences()

    def slow():
        started.set()
        release.wait(5)
        return "ref"

    worker = threading.Thread(target=references.prepare, args=("a.png", slow))
    worker.start()
    assert started.wait(5)
    got = []
    reader = threading.Thread(target=lambda: got.append(references.get("a.png", timeout_s=5)))
    reader.start()
    time.sleep(0.1)
    assert got == []  # still waiting
    release.set()
    reader.join(5)
    worker.join(5)
    assert got == ["ref"]


def test_a_failed_computation_leaves_nothing_and_a_slow_one_is_not_waited_for_past_the_timeout():
    references = CleanReferences()

    def broken():
        raise ValueError("unreadable")

    with pytest.raises(ValueError):
        references.prepare("a.png", broken)
    assert len(references) == 0 and references.get("a.png") is None
    release = threading.Event()
    worker = threading.Thread(target=references.prepare, args=("b.png", lambda: release.wait(5) and "late"))
    worker.start()
    time.sleep(0.05)
    start = time.perf_counter()
    assert references.get("b.png", timeout_s=0.1) is None and time.perf_counter() - start < 2
    release.set()
    worker.join(5)


def test_references_go_with_age_and_the_oldest_beyond_the_capacity():
    clock = Clock()
    references = CleanReferences(capacity=2, max_age_s=900, clock=clock)
    references.prepare("a.png", lambda: "a")
    clock.now = 100
    references.prepare("b.png", lambda: "b")
    references.prepare("c.png", lambda: "c")  # over capacity: a goes
    assert references.get("a.png") is None and references.get("b.png") == "b"
    clock.now = 950  # b is 850 s old, c too: kept
    references.prune()
    assert len(references) == 2
    clock.now = 1001
    references.prune()
    assert len(references) == 0


def test_start_returns_at_once_and_a_click_gets_the_reference_when_it_is_ready():
    release = threading.Event()
    references = CleanReferences()
    start = time.perf_counter()
    assert references.start("a.png", lambda: release.wait(5) and "ref")
    assert time.perf_counter() - start < 0.5  # the page's event never waits for the autoencoder
    release.set()
    assert references.get("a.png", timeout_s=5) == "ref"


def test_a_burst_of_uploads_is_not_queued_without_bound():
    release = threading.Event()
    references = CleanReferences()
    started = [references.start(f"{index}.png", lambda: release.wait(5) and "ref") for index in range(references_module.MAX_PENDING + 2)]
    assert started.count(True) == references_module.MAX_PENDING and started[-1] is False
    assert references.get(f"{references_module.MAX_PENDING + 1}.png") is None  # skipped: its click measures all three
    release.set()
    assert references.get("0.png", timeout_s=5) == "ref"


def test_a_failed_background_computation_leaves_nothing_and_never_hangs_a_click():
    references = CleanReferences()

    def broken():
        raise ValueError("unreadable")

    assert references.start("a.png", broken)
    assert references.get("a.png", timeout_s=5) is None
    assert len(references) == 0
