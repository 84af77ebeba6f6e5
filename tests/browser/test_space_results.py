"""Where a result lands, in a real Chromium (Playwright) against the dummy app, each protection slowed to
``SLOW_S`` seconds so the page can be acted on while a request runs.

* The before/after slider: both halves occupy the same box and show the picture at the same place, at
  1366×900 and 390×844, for wide, tall, tiny and larger-than-the-view uploads; dragging the bar moves
  the cut between them to where the bar is.
* Protect A, upload B while A runs: A's result never appears beside B.
* On a phone the progress shows inside the viewport at the click, and the result is scrolled into view.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser.serving import CHROMIUM, browser, serve_dummy_app, upload, upload_and_click_protect  # noqa: F401  (browser: a fixture)

DESKTOP, PHONE = {"width": 1366, "height": 900}, {"width": 390, "height": 844}
SLOW_S = 3.0

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def app_url():
    with serve_dummy_app("--no-lpips", "--slow-protect", str(SLOW_S)) as url:
        yield url


def _open(browser, url, viewport):
    page = browser.new_context(viewport=viewport).new_page()
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="load")
    page.locator("#protect-button").wait_for()
    return page


def _picture(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """Smooth colour ramps plus a little noise: a picture whose two halves could be told apart if misplaced."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), np.full_like(x, 128)], -1)
    rgb = rgb + np.random.default_rng(seed).normal(0, 6, rgb.shape)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return path


def _protect(page, image: Path) -> None:
    upload_and_click_protect(page, image)
    page.locator("#before-after img").nth(1).wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('#before-after img')].every(i => i.complete && i.naturalWidth > 0)")


# Each half's element box and, inside it, the rectangle the picture is drawn in (object-fit: contain),
# plus the visible box the slider clips to.
GEOMETRY_JS = """() => {
  const fit = (img) => { const r = img.getBoundingClientRect(), s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const w = img.naturalWidth * s, h = img.naturalHeight * s; return {x: r.x + (r.width - w) / 2, y: r.y + (r.height - h) / 2, w, h}; };
  const imgs = [...document.querySelectorAll('#before-after img')];
  const wrap = document.querySelector('#before-after .wrap').getBoundingClientRect();
  return {boxes: imgs.map(i => { const r = i.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; }),
          drawn: imgs.map(fit), natural: imgs.map(i => [i.naturalWidth, i.naturalHeight]), wrap: {x: wrap.x, y: wrap.y, w: wrap.width, h: wrap.height}};
}"""


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_before_and_after_halves_line_up_pixel_for_pixel(browser, app_url, tmp_path, viewport):
    page = _open(browser, app_url, viewport)
    for width, height in ((500, 300), (300, 500), (60, 40), (1800, 1200)):
        image = _picture(tmp_path / f"p{width}x{height}.png", width, height)
        _protect(page, image)
        page.locator("#before-after").scroll_into_view_if_needed()
        geometry = page.evaluate(GEOMETRY_JS)
        before, after = geometry["drawn"]
        assert geometry["natural"][0] == geometry["natural"][1], geometry  # the same pixels on both sides
        for key in ("x", "y", "w", "h"):
            assert abs(before[key] - after[key]) <= 0.5, (viewport, width, height, geometry)
        wrap = geometry["wrap"]  # the whole picture is inside the box the slider shows (nothing cut off)
        assert before["y"] >= wrap["y"] - 0.5 and before["y"] + before["h"] <= wrap["y"] + wrap["h"] + 0.5, geometry
        assert before["x"] >= wrap["x"] - 0.5 and before["x"] + before["w"] <= wrap["x"] + wrap["w"] + 0.5, geometry
    page.context.close()


def test_dragging_the_bar_moves_the_cut_to_the_bar(browser, app_url, tmp_path):
    page = _open(browser, app_url, DESKTOP)
    _protect(page, _picture(tmp_path / "drag.png", 480, 320))
    page.locator("#before-after").scroll_into_view_if_needed()
    handle = page.locator("#before-after [data-testid=slider]").bounding_box()
    wrap = page.evaluate(GEOMETRY_JS)["wrap"]
    for fraction in (0.25, 0.8):
        page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
        page.mouse.down()
        target = wrap["x"] + fraction * wrap["w"]
        page.mouse.move(target, handle["y"] + handle["height"] / 2, steps=8)
        page.mouse.up()
        handle = page.locator("#before-after [data-testid=slider]").bounding_box()
        bar_x = handle["x"] + handle["width"] / 2
        after = page.locator("#before-after img").nth(1)
        clip = after.evaluate("e => e.style.clipPath")
        cut = float(re.search(r"inset\(0px 0px 0px ([\d.]+)%\)", clip).group(1)) / 100
        box = after.bounding_box()
        assert abs(bar_x - target) <= 3, (bar_x, target)
        assert abs(box["x"] + cut * box["width"] - bar_x) <= 2, (clip, box, bar_x)  # the cut is where the bar is
    page.context.close()


def test_a_new_upload_while_protecting_never_shows_the_old_result(browser, app_url, tmp_path):
    page = _open(browser, app_url, DESKTOP)
    first, second = _picture(tmp_path / "first.png", 200, 150), _picture(tmp_path / "second.png", 150, 200, seed=1)
    upload(page, first)
    page.locator("#protect-button").click()
    page.wait_for_timeout(500)  # A is running (SLOW_S seconds)
    page.locator("#protect-input input[type=file]").set_input_files(str(second))
    page.wait_for_timeout((SLOW_S + 2.5) * 1000)  # A has finished by now
    page.wait_for_function("() => !document.querySelector('#verdict').innerText.includes('Measuring')")
    assert page.locator("#protected-file a[download]").count() == 0, page.locator("#protected-file").inner_text()
    assert page.locator("#before-after img").count() == 0
    assert "Protected" not in page.locator("#verdict").inner_text()
    page.locator("#protect-button").click()  # B itself is protected as usual
    page.locator("#protected-file a[download='second_protected_eta8.png']").wait_for()
    page.context.close()


def test_phone_shows_progress_in_view_and_scrolls_to_the_result(browser, app_url, tmp_path):
    page = _open(browser, app_url, PHONE)
    upload(page, _picture(tmp_path / "phone.png", 300, 200))
    assert page.locator("#verdict").bounding_box()["y"] > PHONE["height"]  # the result column starts below the fold
    page.locator("#protect-button").click()
    page.wait_for_timeout(800)
    in_view = page.evaluate("""() => [...document.querySelectorAll('[data-testid=status-tracker]')]
        .filter(e => !e.classList.contains('hide') && e.offsetParent !== null)
        .some(e => { const r = e.getBoundingClientRect(); return r.height > 0 && r.bottom > 0 && r.top < window.innerHeight; })""")
    assert in_view, "no progress inside the phone's viewport while the request runs"
    page.locator("#protected-file a[download='phone_protected_eta8.png']").wait_for()
    page.wait_for_function("() => !document.querySelector('#verdict').innerText.includes('Measuring')")
    page.wait_for_timeout(500)
    box = page.locator("#verdict").bounding_box()
    assert 0 <= box["y"] < PHONE["height"], box  # the result is on screen
    page.context.close()
