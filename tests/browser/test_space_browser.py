"""The Space in a real Chromium (Playwright, sync API) against the dummy app on 127.0.0.1.

Starts ``python -m tests.launch_dummy_app`` in a subprocess, then drives the page like a visitor, at
1366×900 (a laptop) and 390×844 (a phone): upload a PNG with transparency, protect, download; the
one action and its result inside the first screen; a text file gives a message, and a new upload
clears it; examples and target thumbnails; every tab reachable by name on the phone; help text
contrast. Saves screenshots as screenshot_<tab>.png (and screenshot_protect_phone.png).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser.serving import CHROMIUM, browser, serve_dummy_app, upload, upload_and_click_protect  # noqa: F401  (browser: a fixture)

# Screenshots go to a scratch folder unless FASTPROTECT_SCREENSHOTS names one (docs/images to refresh the
# documentation), so that a test run never leaves the committed pictures modified.
SCREENSHOTS = Path(os.environ.get("FASTPROTECT_SCREENSHOTS", Path(tempfile.gettempdir()) / "fastprotect-screenshots"))
ETA_LEVELS = 8
TABS = {"protect": "Protect", "mimic": "Mimic's view", "duel": "LoRA duel", "batch": "Batch", "about": "About"}
DESKTOP, PHONE = {"width": 1366, "height": 900}, {"width": 390, "height": 844}
# WCAG 2.x relative luminance and contrast ratio of an element's text on its nearest opaque background.
CONTRAST_JS = """
(element) => {
  const parse = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                               return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  let node = element, bg = [255, 255, 255];
  while (node) { const c = parse(getComputedStyle(node).backgroundColor); if (c.length >= 3 && (c.length < 4 || c[3] > 0.9)) { bg = c; break; } node = node.parentElement; }
  const fg = parse(getComputedStyle(element).color), [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}
"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def app_url():
    with serve_dummy_app() as url:
        yield url


def _open(browser, app_url, viewport):
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url, wait_until="load")  # not "networkidle": Gradio keeps a connection open
    page.locator("#protect-button").wait_for()
    # Gradio renders the examples a moment after the rest of the page: checks must not run before they exist.
    page.get_by_role("button", name="Example: sunset hills").wait_for()
    return page


@pytest.fixture(scope="module")
def page(browser, app_url):
    page = _open(browser, app_url, DESKTOP)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def phone(browser, app_url):
    page = _open(browser, app_url, PHONE)
    yield page
    page.context.close()


def _rgba_png(path: Path) -> Path:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    alpha = np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (60, 1))
    alpha[:6] = 0
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return path


def _upload_and_protect(page, image: Path) -> None:
    upload_and_click_protect(page, image)
    _wait_for_verdict(page)


def _result_link(page) -> str | None:
    """The download link's address: each request writes into its own folder, so a new result has a new one."""
    link = page.locator("#protected-file a[download]")
    return link.first.get_attribute("href") if link.count() else None


def _wait_for_new_result(page, download_name: str, previous: str | None) -> None:
    """A result of the click just made, not the one already on show under the same file name, with its verdict."""
    page.wait_for_function("""([name, previous]) => {
        const link = document.querySelector(`#protected-file a[download='${name}']`);
        return link !== null && link.getAttribute('href') !== previous; }""", arg=[download_name, previous])
    _wait_for_verdict(page)


def _wait_for_verdict(page) -> None:
    """The verdict follows the protected image (measured after it is shown)."""
    page.wait_for_function("() => !document.querySelector('#verdict').innerText.includes('Measuring')")


def _in_first_screen(page, selector: str) -> bool:
    """True when the element lies wholly inside the first viewport (scrolled to the top)."""
    page.evaluate("window.scrollTo(0, 0)")
    box = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"] and box["x"] + box["width"] <= size["width"]


def _error_badges(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid=status-tracker]')]
        .filter(e => !e.classList.contains('hide') && e.innerText.includes('Error')).map(e => e.innerText)""")


IDLE_JS = "() => ![...document.querySelectorAll('[data-testid=status-tracker]')].some(e => !e.classList.contains('hide') && e.offsetParent !== null && !e.innerText.includes('Error'))"


def _close_toasts(page) -> None:
    for close in page.locator("[data-testid='toast-close']").all():
        close.click()


def test_one_action_and_its_result_in_the_first_screen(page, tmp_path):
    assert _in_first_screen(page, "#protect-input") and _in_first_screen(page, "#strength") and _in_first_screen(page, "#protect-button")
    assert page.get_by_role("button", name="Example: sunset hills").is_visible()
    # before any result, the examples the first hint points to ("click an example below") are on the first screen too
    assert _in_first_screen(page, "role=button[name='Example: blue marble']")
    source = _rgba_png(tmp_path / "sunflower.png")
    _upload_and_protect(page, source)
    for selector in ("#verdict", "#protected-file", "#before-after"):
        assert _in_first_screen(page, selector), f"{selector} is below the first screen at 1366×900"
    verdict = page.locator("#verdict").inner_text()
    assert "Protected with Standard strength" in verdict and "PSNR" in verdict

    with page.expect_download() as download_info:
        page.locator("#protected-file a[download]").first.click()
    download = download_info.value
    assert download.suggested_filename == "sunflower_protected_eta8.png"
    saved = tmp_path / "downloaded.png"
    download.save_as(saved)
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(source) as original, Image.open(saved) as protected:
        assert protected.format == "PNG" and protected.size == original.size and protected.mode == "RGBA"
        before, after = np.asarray(original), np.asarray(protected)
    assert np.array_equal(before[..., 3], after[..., 3])
    assert np.abs(before[..., :3].astype(int) - after[..., :3].astype(int)).max() <= ETA_LEVELS
    assert page.locator("#before-after img").count() >= 1  # the before/after slider is shown
    page.locator("#details").get_by_text("Details").first.click()
    record = page.locator("#info-record").inner_text()
    assert "PSNR" in record and "largest change" in record and "target pattern" in record and "meaning" in record and "Glossary" in record
    page.locator("#details").get_by_text("Details").first.click()


def test_a_text_file_gives_a_message_and_a_new_upload_clears_it(page, tmp_path):
    if page.get_by_label("Remove Image").count():
        page.get_by_label("Remove Image").first.click()
    page.locator("#protect-button").click()  # nothing uploaded: an error, shown on the outputs too
    page.locator("[data-testid='toast-body']").filter(has_text="Upload an image first").first.wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=status-tracker]')].some(e => !e.classList.contains('hide') && e.innerText.includes('Error'))")
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image")
    page.locator("#protect-input input[type=file]").set_input_files(str(text))
    toast = page.locator("[data-testid='toast-body']").filter(has_text="Only image").first
    toast.wait_for()
    assert "Traceback" not in toast.inner_text()
    _close_toasts(page)
    if page.get_by_label("Remove Image").count():
        page.get_by_label("Remove Image").first.click()
    upload(page, _rgba_png(tmp_path / "fresh.png"))
    page.wait_for_function("() => ![...document.querySelectorAll('[data-testid=status-tracker]')].some(e => !e.classList.contains('hide') && e.innerText.includes('Error'))")
    assert _error_badges(page) == []
    assert page.locator("#protected-file a[download]").count() == 0  # the previous result is gone too
    assert "Protect" in page.locator("#verdict").inner_text()


def test_example_click_protects_and_the_mimic_tab_follows(page):
    page.get_by_role("button", name="Example: mosaic tiles").click()
    page.locator("#protected-file a[download='mosaic_tiles_protected_eta8.png']").wait_for()
    _wait_for_verdict(page)
    assert "Protected with Standard strength" in page.locator("#verdict").inner_text()
    page.get_by_role("tab", name=TABS["mimic"]).click()
    page.locator("#roundtrip-button").click()
    page.locator("#roundtrip-protected img").first.wait_for()
    numbers = page.locator("#roundtrip-numbers").inner_text()
    assert "Stable Diffusion 1.5 VAE" in numbers and "mosaic_tiles.png" in numbers  # the dummy is an SD-VAE; the image by name
    page.get_by_role("tab", name=TABS["protect"]).click()


def test_target_thumbnail_selects_the_target(page):
    page.locator("#advanced").get_by_text("Advanced").first.click()
    for index, name in enumerate(("low", "mid", "high")):  # each caption whole, inside its thumbnail
        thumbnail = page.locator("#targets .thumbnail-item").nth(index)
        caption = thumbnail.locator(".caption-label")
        outer, inner = thumbnail.bounding_box(), caption.bounding_box()
        assert caption.inner_text() == name and caption.evaluate("e => e.scrollWidth <= e.clientWidth")
        assert inner["x"] >= outer["x"] and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1
    page.locator("#targets .thumbnail-item").nth(2).click()  # the third thumbnail: "high"
    page.wait_for_function("() => document.querySelector('#target input[value=high]').checked")
    page.locator("#targets .thumbnail-item").nth(0).click()
    page.wait_for_function("() => document.querySelector('#target input[value=low]').checked")
    page.locator("#target [data-testid='auto-radio-label']").click()
    page.locator("#advanced").get_by_text("Advanced").first.click()


def test_every_control_has_a_name_and_help_text_contrast(page):
    unnamed = page.evaluate("""() => [...document.querySelectorAll('button, input, textarea, select, [role=tab]')]
        .filter(e => e.offsetParent !== null && e.type !== 'hidden')
        .filter(e => !(e.getAttribute('aria-label') || e.labels?.[0]?.innerText?.trim() || e.innerText?.trim() || e.title || e.closest('label')?.innerText?.trim()))
        .map(e => e.outerHTML.slice(0, 120))""")
    assert unnamed == [], unnamed
    for selector in (".info-text", "[data-testid=block-info]", "#protect-button", "[role=tab].selected"):
        for element in page.locator(selector).all()[:4]:
            ratio = element.evaluate(CONTRAST_JS)
            assert ratio >= 4.5, f"{selector}: contrast {ratio:.2f}:1 < 4.5:1"


def test_on_a_phone_the_image_strength_and_protect_are_on_the_first_screen(phone):
    for selector in ("#protect-input", "#strength", "#protect-button"):
        assert _in_first_screen(phone, selector), f"{selector} is below the first screen at 390×844"


def test_phone_every_tab_by_name_and_readable_tables(phone, tmp_path):
    assert phone.locator(".overflow-menu button:visible").count() == 0
    for key, title in TABS.items():
        tab = phone.get_by_role("tab", name=title)
        assert tab.is_visible() and tab.bounding_box()["x"] + tab.bounding_box()["width"] <= PHONE["width"], title
    _upload_and_protect(phone, _rgba_png(tmp_path / "phone.png"))
    phone.locator("#details").get_by_text("Details").first.click()
    phone.locator("#info-record td:nth-child(2)").first.wait_for()  # the accordion renders its table after the click
    cells = phone.locator("#info-record td:nth-child(2)").all()
    assert cells and all(cell.evaluate("e => getComputedStyle(e).whiteSpace") == "nowrap" for cell in cells)
    phone.locator("#details").get_by_text("Details").first.click()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    phone.evaluate("window.scrollTo(0, 0)")
    phone.screenshot(path=str(SCREENSHOTS / "screenshot_protect_phone.png"))
    for key, title in TABS.items():
        phone.get_by_role("tab", name=title).click()
        phone.wait_for_timeout(200)
    phone.get_by_role("tab", name=TABS["protect"]).click()


def test_screenshot_every_tab(page):

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.get_by_role("tab", name=TABS["protect"]).click()
    for _ in range(2):  # the same example twice: Gradio's copy of it must survive the first click
        # The second click's waits must not be met by the first result (same file name): its verdict, streamed
        # seconds later, would replace the round trip below with "press the button".
        previous = _result_link(page)
        page.get_by_role("button", name="Example: sunset hills").click()
        _wait_for_new_result(page, "sunset_hills_protected_eta8.png", previous)
        page.wait_for_function(IDLE_JS)
        assert _error_badges(page) == []
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(1000)  # Gradio fades a result in (a CSS transition) after its event ends: not half-faded
    page.screenshot(path=str(SCREENSHOTS / "screenshot_protect.png"))  # the first screen, as a visitor sees it
    for key, title in TABS.items():
        if key == "protect":
            continue
        page.get_by_role("tab", name=title).click()
        page.wait_for_timeout(300)
        if key == "mimic":  # the round trip of the example protected above (CPU, instant)
            page.locator("#roundtrip-button").click()
            page.locator("#roundtrip-protected img").first.wait_for()
            page.wait_for_function(IDLE_JS)
        if key in ("mimic", "duel"):  # no GPU here: the page must say so, naming the family
            notice = page.locator("#img2img-disabled" if key == "mimic" else "#duel-disabled")
            assert notice.is_visible() and "no GPU" in notice.inner_text() and "Stable Diffusion 1.5" in notice.inner_text()
        page.screenshot(path=str(SCREENSHOTS / f"screenshot_{key}.png"), full_page=True)
    assert "it is not a lock" in page.locator("#about").inner_text()
    page.get_by_role("tab", name=TABS["protect"]).click()
