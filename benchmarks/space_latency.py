"""Click to result in the real Space, as a visitor sees it: start-up, then Protect on a 512² and a 1024² photo.

Starts ``python app.py`` (the bundled checkpoint, offline, CPU) in a subprocess and measures:

* **start-up**: seconds from starting the process until ``/`` answers HTTP 200 (the models load in the
  background after that), and until the first ``/protect`` (sent as soon as the page answers) returns;
* **click to result**, in Chromium (Playwright): a real dev-set photo, centre-cropped and resized in memory
  (nothing is written to disk but what the Space itself stores), uploaded; then from the click on Protect
  until the protected image is on screen (the slider's two pictures loaded) and until the verdict is shown,
  read in the page itself (``performance.now()`` once per frame), the median of ``--runs`` runs per size.
  Each run uploads other bytes (the crop moved by a pixel: no cache of an earlier run helps) and clicks
  ``--think`` seconds after the image is in the box, as a visitor who looks at the strength first (the page
  measures the clean half of the verdict meanwhile: webapp/references.py; ``--think 0`` clicks at once);
* where the time goes: the handler's own ``timings_s`` for the same uploads through ``gradio_client``.

::

    python -m benchmarks.space_latency [--sizes 512,1024] [--runs 3] [--starts 3] [--think 1] \\
        [--json benchmarks/results/space_latency.json --markdown benchmarks/results/space_latency.md]

Goals (issue 30): for a 1024² upload, the protected image shown ≤ 1 s after the click with the verdict streamed
after it (the issue's second form), and the verdict itself ≤ 1 s (its first form); the page answers ≤ 5 s after
``python app.py``.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
VERDICT_GOAL_S = {"1024²": 1.0}  # click to verdict shown, per size
SHOWN_GOAL_S = {"1024²": 1.0}  # click to protected image shown (the verdict streamed after it), per size
DEFAULT_THINK_S = 1.0  # image in the box → click: a visitor reading the strength choices
STARTUP_GOAL_S = 5.0  # python app.py to the page answering HTTP 200
PAGE_TIMEOUT_S = 180

# Installed in the page before each click: the click's time, then, once per frame, the first moment the new
# result's pictures are all loaded and the first moment its verdict is shown (performance.now(), ms).
WATCH_JS = """
(previous) => {
  const watch = {click: null, arrived: null, shown: null, verdict: null};
  window.__latency = watch;
  document.querySelector('#protect-button').addEventListener('click', () => { watch.click = performance.now(); },
                                                             {capture: true, once: true});
  const frame = () => {
    const link = document.querySelector('#protected-file a[download]');
    const href = link ? link.getAttribute('href') : null;
    if (watch.click !== null && href && href !== previous) {
      if (watch.arrived === null) watch.arrived = performance.now();
      const folder = href.slice(0, href.lastIndexOf('/'));
      const pictures = [...document.querySelectorAll('#before-after img')].filter(img => img.src.includes(folder));
      if (watch.shown === null && pictures.length >= 2 && pictures.every(img => img.complete && img.naturalWidth > 0)) {
        watch.shown = performance.now();
      }
      const verdict = document.querySelector('#verdict').innerText;
      if (watch.verdict === null && watch.shown !== null && verdict.includes('LPIPS') && !verdict.includes('Measuring')) {
        watch.verdict = performance.now();
      }
    }
    if (watch.verdict === null) requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}
"""


# ------------------------------------------------------------------------------ pure functions (tested)
def parse_sizes(text: str) -> list[int]:
    """"512,1024" -> [512, 1024]: square uploads of these sides."""
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(size < 32 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be whole numbers ≥ 32, comma-separated; got {text!r}")
    return sizes


def median_or_none(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return float(statistics.median(present)) if present else None


# What the browser records after the click: the result's data on the page (its download link), its pictures
# loaded (the slider), its verdict shown.
MOMENTS = {"arrived_s": "result data on the page", "shown_s": "protected image shown", "verdict_s": "verdict shown"}


def summarise(size: int, runs: Sequence[dict[str, float | None]], stages: Sequence[dict[str, float]]) -> dict[str, Any]:
    """One row: the medians of the browser runs (seconds after the click) and of the handler's stages."""
    keys = list(dict.fromkeys(key for stage in stages for key in stage))  # the handler's order
    row: dict[str, Any] = {"size": f"{size}²", "runs": len(runs)}
    for moment in MOMENTS:
        row[moment] = median_or_none([run.get(moment) for run in runs])
        row[moment.replace("_s", "_all_s")] = [run.get(moment) for run in runs]
    row["handler_s"] = {key: median_or_none([stage.get(key) for stage in stages]) for key in keys}
    return row


def goal_lines(results: dict[str, Any]) -> list[str]:
    """Each goal with its measured number, met or NOT MET (a missing number is NOT MET)."""
    lines = []
    rows = {row["size"]: row for row in results["rows"]}
    for key, goals, words in (("shown_s", SHOWN_GOAL_S, "protected image shown (verdict streamed after it)"),
                              ("verdict_s", VERDICT_GOAL_S, "verdict shown")):
        for size, goal in goals.items():
            measured = rows.get(size, {}).get(key)
            state = "met    " if measured is not None and measured <= goal else "NOT MET"
            lines.append(f"  {state}  {size} click to {words} ≤ {goal:.1f} s: measured {_s(measured)} (median)")
    startup = results.get("startup", {}).get("page_s")
    state = "met    " if startup is not None and startup <= STARTUP_GOAL_S else "NOT MET"
    lines.append(f"  {state}  start-up (python app.py → page answers HTTP 200) ≤ {STARTUP_GOAL_S:.0f} s: measured {_s(startup)} (median)")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The tables and the goal lines, as printed and as committed."""
    machine = results["machine"]
    lines = [
        f"Click to result in the real Space (`python app.py`, bundled checkpoint, CPU), Chromium at 1366×900; "
        f"median of {results['runs']} runs per size, each a new upload clicked {results.get('think_s', 0):g} s after it is in the box; "
        f"{machine}; load average before {results['load_before']}, after {results['load_after']}.",
        "",
        "| upload | " + " | ".join(MOMENTS.values()) + " | each run (data / shown / verdict) |",
        "|---|" + "---|" * (len(MOMENTS) + 1),
    ]
    for row in results["rows"]:
        each = ", ".join("/".join(_s(value, unit="") for value in values)
                         for values in zip(*(row[moment.replace("_s", "_all_s")] for moment in MOMENTS)))
        lines.append(f"| {row['size']} | " + " | ".join(_s(row[moment]) for moment in MOMENTS) + f" | {each} |")
    stages = list(dict.fromkeys(key for row in results["rows"] for key in row["handler_s"]))
    if stages:
        lines += ["", "Where the time goes: the handler's own `timings_s` (gradio_client, median, s):", "",
                  "| upload | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
        for row in results["rows"]:
            lines.append(f"| {row['size']} | " + " | ".join(_s(row["handler_s"].get(stage)) for stage in stages) + " |")
    startup = results.get("startup") or {}
    if startup:
        lines += ["", f"Start-up, {len(startup.get('page_all_s', []))} starts: page answers HTTP 200 after "
                      f"{_s(startup.get('page_s'))} (each: {', '.join(_s(v) for v in startup.get('page_all_s', []))}); "
                      f"first /protect (512², sent when the page answers) returned {_s(startup.get('first_result_s'))} after the start."]
    lines += ["", "Goals (issue 30):", *goal_lines(results)]
    return "\n".join(lines)


def _s(value: float | None, unit: str = " s") -> str:
    return "–" if value is None else f"{value:.2f}{unit}"


# ------------------------------------------------------------------------------------ the Space
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@contextmanager
def real_space(log: Path) -> Iterator[tuple[str, float, subprocess.Popen]]:
    """``python app.py`` offline on a free port: (url, seconds until the page answered, process)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FASTPROTECT_")}
    env.update(HF_HUB_OFFLINE="1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    url = f"http://127.0.0.1:{port}/"
    with log.open("w") as sink:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        while not answers(url):
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited ({process.returncode}): {log.read_text()[-2000:]}")
            if time.perf_counter() - start > PAGE_TIMEOUT_S:
                raise RuntimeError(f"app.py did not answer within {PAGE_TIMEOUT_S} s")
            time.sleep(0.05)
        yield url, time.perf_counter() - start, process
    finally:
        process.terminate()  # SIGTERM: the Space deletes its workspace
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def photo_jpeg(size: int, source: Path, shift: int = 0) -> bytes:
    """The photo's centred square resized to size², as JPEG bytes in memory (quality 90, like a phone upload);
    ``shift`` (0–63) moves the square by up to 7 pixels right and 7 down (another upload, the same kind of picture)."""
    from PIL import Image

    if not 0 <= shift < 64:
        raise ValueError(f"shift must be in 0..63, not {shift}")
    with Image.open(source) as image:
        image = image.convert("RGB")
        side = min(image.size) - 16
        left, top = (image.width - side) // 2 + shift % 8, (image.height - side) // 2 + shift // 8
        square = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    square.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def default_photo() -> Path:
    from benchmarks.common import DEFAULT_IMAGES

    photos = sorted((DEFAULT_IMAGES / "object").glob("*.jpg")) or sorted(DEFAULT_IMAGES.rglob("*.jpg"))
    if not photos:
        raise SystemExit(f"no dev-set photo under {DEFAULT_IMAGES}; pass --image")
    return photos[0]


def measure_startup(starts: int, upload: bytes, scratch: Path) -> dict[str, Any]:
    """Seconds to the page answering, ``starts`` times; the first /protect's return on the first start."""
    from gradio_client import Client, handle_file

    page, first_result = [], None
    for index in range(starts):
        with real_space(scratch / f"startup_{index}.log") as (url, page_s, _):
            page.append(page_s)
            if index == 0:
                started = time.perf_counter() - page_s
                image = scratch / "first.jpg"
                image.write_bytes(upload)
                client = Client(url, verbose=False, download_files=str(scratch / "client"))
                client.predict(handle_file(str(image)), 8, "auto", True, 0, api_name="/protect")
                first_result = time.perf_counter() - started
    return {"page_s": median_or_none(page), "page_all_s": page, "first_result_s": first_result}


def browser_runs(url: str, uploads: dict[int, list[bytes]], think_s: float) -> dict[int, list[dict[str, float | None]]]:
    """Per size, one click per upload, ``think_s`` after the image is in the box: seconds from the click to the
    protected image shown and to the verdict shown."""
    from playwright.sync_api import sync_playwright

    out: dict[int, list[dict[str, float | None]]] = {size: [] for size in uploads}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
        page.goto(url, wait_until="load")
        page.locator("#protect-button").wait_for()
        for size, variants in uploads.items():
            for data in variants:
                page.locator("#protect-input input[type=file]").set_input_files(
                    {"name": f"photo_{size}.jpg", "mimeType": "image/jpeg", "buffer": data})
                page.locator("#protect-input img").first.wait_for()
                page.wait_for_function("() => document.querySelector('#protected-file a[download]') === null")  # cleared
                page.wait_for_timeout(think_s * 1000)
                page.evaluate(WATCH_JS, None)
                page.locator("#protect-button").click()
                page.wait_for_function("() => window.__latency.verdict !== null")
                watch = page.evaluate("() => window.__latency")
                out[size].append({moment: (watch[moment[:-2]] - watch["click"]) / 1000 for moment in MOMENTS})
                print(f"  {size}²: " + ", ".join(f"{words} {out[size][-1][moment]:.2f} s" for moment, words in MOMENTS.items()), flush=True)
        browser.close()
    return out


def handler_stages(url: str, uploads: dict[int, bytes], runs: int, scratch: Path) -> dict[int, list[dict[str, float]]]:
    """The handler's ``timings_s`` (protection stages, until shown, verdict) for the same uploads via gradio_client."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=str(scratch / "client"))
    out: dict[int, list[dict[str, float]]] = {}
    for size, data in uploads.items():
        image = scratch / f"photo_{size}.jpg"
        image.write_bytes(data)
        out[size] = []
        for _ in range(runs):
            info = client.predict(handle_file(str(image)), 8, "auto", True, 0, api_name="/protect")[6]
            out[size].append({key: float(value) for key, value in (info.get("timings_s") or {}).items()})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[512, 1024], help="square upload sides (default 512,1024)")
    parser.add_argument("--runs", type=int, default=3, help="clicks per size (median)")
    parser.add_argument("--starts", type=int, default=3, help="fresh starts of app.py for the start-up time (0: skip)")
    parser.add_argument("--image", type=Path, default=None, help="the photo (default: the first dev-set object photo)")
    parser.add_argument("--think", type=float, default=DEFAULT_THINK_S,
                        help=f"seconds between the image in the box and the click (default {DEFAULT_THINK_S:g})")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 63:
        parser.error("--runs must be 1 to 63 (each run uploads its own crop of the photo)")

    from benchmarks.common import load_average, machine_info, machine_line, write_json

    source = args.image or default_photo()
    uploads = {size: photo_jpeg(size, source) for size in args.sizes}
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="space-latency-") as folder:
        scratch = Path(folder)
        startup = measure_startup(args.starts, uploads[min(uploads)], scratch) if args.starts else {}
        with real_space(scratch / "app.log") as (url, _, _):
            print(f"Space at {url}; warming up with one request per size", flush=True)
            handler_stages(url, uploads, 1, scratch)  # the first request of a process pays one-off costs
            variants = {size: [photo_jpeg(size, source, shift=1 + run) for run in range(args.runs)] for size in args.sizes}
            clicks = browser_runs(url, variants, max(0.0, args.think))
            stages = handler_stages(url, uploads, args.runs, scratch)
    results = {
        "machine": machine_line(machine_info("cpu")),
        "image": source.name,
        "runs": args.runs,
        "think_s": max(0.0, args.think),
        "load_before": load_before,
        "load_after": load_average(),
        "startup": startup,
        "rows": [summarise(size, clicks[size], stages[size]) for size in args.sizes],
    }
    report = markdown(results)
    print(report)
    if args.json:
        write_json(args.json, results)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
