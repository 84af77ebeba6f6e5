"""Screenshots of the real Space for the docs: a fresh offline ``python app.py`` with the bundled checkpoint.

    python -m scripts.make_space_screenshots [--out docs/images]

Chromium (Playwright, Debian's binary) clicks the sunset example, waits for its verdict and saves
``screenshot_protect_real.png`` (the first screen at 1366×900), ``screenshot_protect_real_phone.png`` (the whole page at
390×844, after the same example) and ``screenshot_mimic_real.png`` (Mimic's view of that result). Prints the verdict,
which docs/SPACE.md quotes. The dummy-model screenshots come from the browser tests (docs/SPACE.md, "Screenshots").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.space_latency import CHROMIUM, real_space

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
VERDICT_DONE_JS = "() => { const v = document.querySelector('#verdict'); return v && /LPIPS/.test(v.innerText); }"


def protect_example(page) -> str:
    """Click the sunset example and wait until its verdict is shown; the verdict's text."""
    page.get_by_role("button", name="Example: sunset hills").click()
    page.wait_for_function(VERDICT_DONE_JS, timeout=180_000)
    page.wait_for_timeout(1000)  # Gradio fades results in: not half-faded
    return page.locator("#verdict").inner_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="space-shots-") as folder, real_space(Path(folder) / "app.log") as (url, _, _):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            desktop = browser.new_page(viewport=DESKTOP)
            desktop.goto(url, wait_until="load")
            verdict = protect_example(desktop)
            desktop.evaluate("window.scrollTo(0, 0)")
            desktop.screenshot(path=str(args.out / "screenshot_protect_real.png"))
            desktop.get_by_role("tab", name="Mimic's view").click()
            desktop.locator("#roundtrip-button").click()
            desktop.locator("#roundtrip-protected img").first.wait_for(timeout=120_000)
            desktop.wait_for_timeout(1000)
            desktop.screenshot(path=str(args.out / "screenshot_mimic_real.png"), full_page=True)
            phone = browser.new_page(viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True)
            phone.goto(url, wait_until="load")
            protect_example(phone)
            phone.evaluate("window.scrollTo(0, 0)")
            phone.screenshot(path=str(args.out / "screenshot_protect_real_phone.png"), full_page=True)
            browser.close()
    print(f"verdict on the sunset example: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
