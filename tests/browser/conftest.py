"""The browser fixture every browser test shares: one Chromium per module (tests/browser/serving.py)."""

from __future__ import annotations

import pytest

from tests.browser.serving import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
