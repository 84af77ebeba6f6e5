"""The Space in a real Chromium (Playwright, sync API) against the dummy app on 127.0.0.1.

Starts ``python -m tests.launch_dummy_app`` in a subprocess, then drives the page like a visitor: upload a
PNG with transparency, protect, download; a text file gives a message and the page keeps working.
Saves one screenshot per tab to docs/images/screenshot_<tab>.png.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
# Screenshots go to a scratch folder unless FASTPROTECT_SCREENSHOTS names one (docs/images to refresh the
# documentation), so that a test run never leaves the committed pictures modified.
SCREENSHOTS = Path(os.environ.get("FASTPROTECT_SCREENSHOTS", Path(tempfile.gettempdir()) / "fastprotect-screenshots"))
ETA_LEVELS = 8
TABS = {"protect": "Protect", "mimic": "What a mimic sees", "duel": "LoRA duel", "batch": "Batch", "about": "About"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.launch_dummy_app", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline, lines = time.monotonic() + 120, []
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                pytest.fail("the dummy app exited:\n" + "".join(lines))
            lines.append(line)
            if line.startswith("READY"):
                break
        else:
            pytest.fail("the dummy app did not start in 120 s:\n" + "".join(lines))
        # Keep reading the app's output: a full pipe would block the server mid-request.
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
def page(app_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-dev-shm-usage"],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(app_url, wait_until="load")  # not "networkidle": Gradio keeps a connection open
        page.locator("#protect-button").wait_for()
        yield page
        browser.close()


def _rgba_png(path: Path) -> Path:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    alpha = np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (60, 1))
    alpha[:6] = 0
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return path


def _upload_and_protect(page, image: Path) -> None:
    page.locator("#protect-input input[type=file]").set_input_files(str(image))
    page.locator("#protect-input img").first.wait_for()
    page.locator("#protect-button").click()
    # The file link appears when the run ends; its download name comes from the upload.
    page.locator(f"#protected-file a[download='{image.stem}_protected.png']").wait_for()


def test_protect_download_and_recover_from_a_text_file(page, tmp_path):
    source = _rgba_png(tmp_path / "sunflower.png")
    _upload_and_protect(page, source)

    with page.expect_download() as download_info:
        page.locator("#protected-file a[download]").first.click()
    download = download_info.value
    assert download.suggested_filename == "sunflower_protected.png"
    saved = tmp_path / "downloaded.png"
    download.save_as(saved)
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(source) as original, Image.open(saved) as protected:
        assert protected.format == "PNG" and protected.size == original.size and protected.mode == "RGBA"
        before, after = np.asarray(original), np.asarray(protected)
    assert np.array_equal(before[..., 3], after[..., 3])
    assert np.abs(before[..., :3].astype(int) - after[..., :3].astype(int)).max() <= ETA_LEVELS

    assert page.locator("#before-after img").count() >= 1  # the before/after slider is shown
    record = page.locator("#info-record").inner_text()
    assert "PSNR" in record and "L∞" in record and "target pattern" in record

    # A text file: a short message in the page, then the page still protects.
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image")
    page.get_by_label("Remove Image").first.click()
    page.locator("#protect-input input[type=file]").set_input_files(str(text))
    page.locator("#protect-button").click()
    toast = page.locator("[data-testid='toast-body']").filter(has_text="Only image").first
    toast.wait_for()
    assert "Traceback" not in toast.inner_text()
    for close in page.locator("[data-testid='toast-close']").all():
        close.click()
    if page.get_by_label("Remove Image").count():
        page.get_by_label("Remove Image").first.click()
    from fastprotect.examples import make_example_images  # a picture worth a screenshot (procedural, CC0)

    landscape = make_example_images(tmp_path / "examples", size=320)[0]
    _upload_and_protect(page, landscape)
    page.locator("#info-record").filter(has_text="320×320").wait_for()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "screenshot_protect.png"), full_page=True)


def test_example_click_protects(page):
    """The procedural examples are lazily cached: the first click runs protect and fills the outputs."""
    page.locator("img[src*='mosaic_tiles']").first.click()
    page.locator("#protected-file a[download='mosaic_tiles_protected.png']").wait_for()


def test_screenshot_every_tab(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for key, title in TABS.items():
        if key == "protect":
            continue  # taken with a result in the test above
        page.get_by_role("tab", name=title).click()
        page.wait_for_timeout(300)
        if key == "mimic":  # the round trip of the image protected in the test above (CPU, instant)
            page.locator("#roundtrip-button").click()
            page.locator("#roundtrip-protected img").first.wait_for()
        if key in ("mimic", "duel"):  # no GPU here: the page must say so
            notice = page.locator("#img2img-disabled" if key == "mimic" else "#duel-disabled")
            assert notice.is_visible() and "no GPU" in notice.inner_text()
        page.screenshot(path=str(SCREENSHOTS / f"screenshot_{key}.png"), full_page=True)
    assert "it is not a lock" in page.locator("#about").inner_text()
    page.get_by_role("tab", name="Protect").click()
