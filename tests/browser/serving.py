"""The browser tests' Chromium (Debian's, driven by Playwright; never ``playwright install``) and the dummy app
started in a subprocess (:func:`serve_dummy_app`)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
START_BOUND_S = 120
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_dummy_app(*options: str) -> Iterator[str]:
    """``python -m tests.launch_dummy_app --port P OPTIONS`` until it prints READY; yields its URL, stops it after.
    Its output is read all along (a full pipe would block the server mid-request) and its tail printed on failure."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "tests.launch_dummy_app", "--port", str(port), *options],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + START_BOUND_S
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                pytest.fail("the dummy app exited:\n" + "".join(lines))
            lines.append(line)
            if line.startswith("READY"):
                break
        else:
            pytest.fail(f"the dummy app did not start in {START_BOUND_S} s:\n" + "".join(lines))
        threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
        yield f"http://127.0.0.1:{port}/"
        if process.poll() is None:
            print("".join(lines[-40:]))  # the app's log tail, shown with -s or on failure
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


# ------------------------------------------------------------------------ what a visitor does on the page
def upload(page, image: Path) -> None:
    """Put ``image`` in the Protect tab's box and wait until the page shows it."""
    page.locator("#protect-input input[type=file]").set_input_files(str(image))
    page.locator("#protect-input img").first.wait_for()


def upload_and_click_protect(page, image: Path) -> None:
    """Upload ``image``, press Protect, and wait for its download link (named by the upload and the strength)."""
    upload(page, image)
    page.locator("#protect-button").click()
    page.locator(f"#protected-file a[download='{image.stem}_protected_eta8.png']").wait_for()
