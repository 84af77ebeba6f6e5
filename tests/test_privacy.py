"""The About tab's promises about a visitor's files, one test each (webapp/privacy.py).

* SIGTERM / SIGINT leave nothing of a visitor anywhere in the server's temp folder, Gradio's cache included;
* a restart removes what a crashed (``kill -9``) earlier run left, and nothing else;
* a timer removes old files on an idle server, with no request arriving;
* a refused request ("Queue is full", an image too large) leaves nothing once its upload's time is up,
  and its results folder not even that long;
* one visitor's request never removes another visitor's (shared, content-addressed) upload;
* each picture of a result is stored once.

Dummy random models (fastprotect/dummy.py): plumbing, not protection.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastprotect.dummy import dummy_space_protector
from webapp import handlers, privacy, space
from webapp.handlers import SpaceContext, VisitorError
from webapp.limits import SpaceLimits

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def picture(path: Path, size: int = 48, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def visitor_files(root: Path, page_files: set[str] = frozenset()) -> list[Path]:
    """Every file below ``root`` except the Space's own (the examples, the owner lock, the page's thumbnails)."""
    kept = space.Workspace.KEPT | page_files
    return sorted(path for path in root.rglob("*") if path.is_file() and not (set(path.relative_to(root).parts) & kept))


def stored_bytes(workspace: space.Workspace) -> list[bytes]:
    """The contents of every visitor file now; a file the timer removes while they are read is left out."""
    contents = []
    for path in visitor_files(workspace.root, workspace.page_files):
        try:
            contents.append(path.read_bytes())
        except OSError:
            continue
    return contents


def wait_until(condition, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# ----------------------------------------------------------------------------- a live Space in a process
class Launched:
    """``python -m tests.launch_dummy_app`` with its own temp folder (TMPDIR): what it leaves there is all it leaves."""

    def __init__(self, tmpdir: Path, extra_env: dict[str, str] | None = None) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("GRADIO_")}
        env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmpdir), **(extra_env or {})})
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "tests.launch_dummy_app", "--port", str(self.port), "--no-lpips"],
                                        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.workspace, lines = None, []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            lines.append(line)
            if line.startswith("WORKSPACE "):
                self.workspace = Path(line.split(" ", 1)[1].strip())
            if line.startswith("READY") or (not line and self.process.poll() is not None):
                break
        assert self.workspace is not None and self.workspace.exists(), "".join(lines)
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # keep the pipe drained

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def use_the_space(url: str, folder: Path) -> None:
    """One visitor: a protect and a batch, through the public API."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=str(folder / "client"))
    client.predict(handle_file(str(picture(folder / "mine.png"))), 8, "auto", True, 0, api_name="/protect")
    client.predict([handle_file(str(picture(folder / "b1.png", seed=1))), handle_file(str(picture(folder / "b2.png", seed=2)))],
                   8, "auto", True, api_name="/batch")


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_leaves_nothing_of_a_visitor_in_the_temp_folder(number, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    space_ = Launched(tmpdir)
    try:
        use_the_space(space_.url, tmp_path)
        mine = Path(tmp_path / "mine.png").read_bytes()
        stored = visitor_files(tmpdir)
        # the upload, the results and Gradio's cache all lie in the one workspace
        assert stored and all(path.is_relative_to(space_.workspace) for path in stored), stored
        assert any(path.read_bytes() == mine for path in stored)
        space_.process.send_signal(number)
        assert space_.process.wait(timeout=60) == 128 + number
    finally:
        space_.stop()
    assert not space_.workspace.exists()
    assert visitor_files(tmpdir) == [], "left after the signal"


def test_a_restart_removes_what_a_crashed_run_left_and_nothing_else(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    crashed = Launched(tmpdir)
    use_the_space(crashed.url, tmp_path)
    crashed.process.send_signal(signal.SIGKILL)  # no handler runs: the folder stays
    crashed.process.wait(timeout=30)
    assert visitor_files(crashed.workspace)
    unrelated = [tmpdir / "fastprotect-space-not-ours", tmpdir / "notes.txt", tmpdir / "another-app"]
    unrelated[0].mkdir()  # our prefix, but no owner lock: not a workspace
    (unrelated[0] / "keep.txt").write_text("x")
    unrelated[1].write_text("someone else's")
    unrelated[2].mkdir()
    running = space.Workspace(parent=tmpdir)  # a Space that is still running: its lock is held
    (running.root / "upload.png").write_text("in use")

    monkeypatch.setenv("GRADIO_TEMP_DIR", "restored after the test")
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", "restored after the test")
    restarted = space.Workspace(parent=tmpdir)
    sweeper = privacy.guard(restarted, SpaceLimits(), signals=False)  # what app.main() does at start
    sweeper.stop()
    assert not crashed.workspace.exists()
    assert all(path.exists() for path in unrelated) and (unrelated[0] / "keep.txt").exists()
    assert (running.root / "upload.png").exists() and restarted.root.exists()
    running.close()
    restarted.close()


# --------------------------------------------------------------------------------------- the timer
def test_the_timer_removes_old_files_with_no_request_arriving(tmp_path):
    workspace = space.Workspace(tmp_path / "ws")
    (workspace.root / "examples").mkdir()
    example = picture(workspace.root / "examples" / "sunset.png")
    thumbnail = workspace.root / ("cd" * 32) / "image.png"  # Gradio's copy of a target thumbnail, written with the page
    thumbnail.parent.mkdir()
    picture(thumbnail)
    workspace.keep_page_files()
    request = workspace.new_dir("protect")
    (request / "a_protected_eta8.png").write_bytes(b"result")
    upload = workspace.root / ("ab" * 32)  # Gradio's content-addressed upload folder
    upload.mkdir()
    (upload / "photo.jpg").write_bytes(b"upload")
    loose = workspace.root / "tmp1234"  # a half-received upload
    loose.write_bytes(b"partial")
    sweeper = privacy.Sweeper(workspace, max_age_s=1.0, every_s=0.1).start()
    try:
        time.sleep(0.3)
        assert request.exists() and upload.exists()  # younger than the age: kept
        assert wait_until(lambda: not request.exists() and not upload.exists() and not loose.exists(), timeout=5)
        assert example.exists() and thumbnail.exists() and (workspace.root / space.Workspace.LOCK_NAME).exists()
        fresh = workspace.new_dir("batch")
        time.sleep(0.3)
        assert fresh.exists()
    finally:
        sweeper.stop()
        workspace.close()


def test_the_timer_also_drops_the_verdicts_copies_held_in_memory(tmp_path):
    """build_demo hands the page's in-memory references to the privacy timer, which prunes them with no request."""
    import app

    workspace = space.Workspace(tmp_path / "ws")
    sweeper = privacy.Sweeper(workspace, max_age_s=1.0, every_s=0.1)
    demo = app.build_demo(dummy_space_protector(), workspace=workspace, limits=SpaceLimits(workspace_max_age_s=1),
                          examples=False, sweeper=sweeper)
    references = demo.space_context.references
    references.prepare("upload.png", lambda: None)
    sweeper.start()
    try:
        assert len(references) == 1
        assert wait_until(lambda: len(references) == 0, timeout=5)  # with no request arriving
    finally:
        sweeper.stop()
        workspace.close()


def test_the_age_and_the_timer_come_from_the_environment(monkeypatch):
    assert SpaceLimits().workspace_max_age_s == 900 and SpaceLimits().sweep_every_s == 30
    monkeypatch.setenv("FASTPROTECT_FILE_MAX_AGE", "5")
    limits = SpaceLimits.from_environment()
    assert limits.workspace_max_age_s == 5 and limits.sweep_every_s == 0.5
    assert "5 seconds" in privacy.privacy_markdown(limits)


def test_the_about_text_says_what_the_tests_prove():
    text = privacy.privacy_markdown(SpaceLimits())
    for promise in ("15 minutes after it was written", "checks every 30 seconds", "whether or not anyone uses the Space",
                    "refused", "deletes its results folder at once", "stops or restarts, the whole folder is deleted",
                    "no visitor's request removes another visitor's file", "memory (never written to disk)",
                    "dropped by the same timer"):
        assert promise in text, promise
    assert "as soon as its result is written" not in text  # the old, untrue promise


# ------------------------------------------------------------------- a live Space in this process
@pytest.fixture
def serve(tmp_path, monkeypatch) -> Iterator:
    """Start the dummy Space here as app.main() does (privacy.guard: Gradio's cache in the workspace, the timer)."""
    started = []

    def start(limits: SpaceLimits, slow_s: float = 0.0):
        import app
        from tests.launch_dummy_app import build_dummy_demo

        monkeypatch.setenv("GRADIO_TEMP_DIR", "restored after the test")
        monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", "restored after the test")
        workspace = space.Workspace(parent=tmp_path)
        sweeper = privacy.guard(workspace, limits, signals=False)
        demo = build_dummy_demo(workspace=workspace, limits=limits)
        workspace.keep_page_files()  # as app.main()
        if slow_s:
            protector = demo.space_context.protector
            fast = protector.protect
            protector.protect = lambda *args, **kwargs: (time.sleep(slow_s), fast(*args, **kwargs))[1]
        port = free_port()
        app.launch(demo, limits, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        started.append((demo, sweeper, workspace))
        return f"http://127.0.0.1:{port}/", workspace

    yield start
    for demo, sweeper, workspace in started:
        demo.close()
        sweeper.stop()
        workspace.close()


def client_for(url: str, folder: Path):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(folder))


def test_each_picture_of_a_result_is_stored_once(serve, tmp_path):
    from gradio_client import handle_file

    url, workspace = serve(SpaceLimits())
    upload = picture(tmp_path / "photo.png", size=64)
    client_for(url, tmp_path / "client").predict(handle_file(str(upload)), 8, "auto", True, 0, api_name="/protect")
    files = visitor_files(workspace.root, workspace.page_files)
    inodes = {path.stat().st_ino for path in files}
    pixels = {}
    for path in files:
        with Image.open(path) as image:
            pixels.setdefault(hashlib.sha256(np.asarray(image.convert("RGBA")).tobytes()).hexdigest(), set()).add(path.stat().st_ino)
    assert all(len(same) == 1 for same in pixels.values()), "the same picture stored in two files"
    # the upload (linked, not copied, as the slider's "before"), the protected PNG (also the slider's "after"), perturbation, map
    assert len(inodes) == 4, files
    assert sum(1 for path in files if path.read_bytes() == upload.read_bytes()) == 2  # the upload and its hard link
    request_folders = {path.parent for path in files if path.parent.name.startswith("protect-")}
    assert len(request_folders) == 1 and len(files) == 5


def test_a_batch_keeps_the_duels_clean_images_as_links_not_copies(tmp_path):
    from fastprotect.images import load_image

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    ctx = SpaceContext(space.LoadOutcome(dummy_space_protector()), space.Workspace(tmp_path / "ws"), SpaceLimits())
    files = [picture(uploads / f"b{index}.png", seed=index) for index in range(2)]
    out = handlers.batch(ctx, [str(path) for path in files], 8, "auto", True)
    for source, (clean, png) in zip(files, out.pairs):
        assert Path(clean).stat().st_ino == source.stat().st_ino  # the upload's own bytes, not a second file
        assert load_image(clean).pixels.shape == load_image(png).pixels.shape  # what the duel reads
    ctx.workspace.discard(Path(out.zip_path).parent)
    assert all(path.read_bytes() for path in files)  # removing the request's links leaves the uploads


def test_a_request_refused_for_its_size_leaves_no_results_folder(tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    ctx = SpaceContext(space.LoadOutcome(dummy_space_protector()), space.Workspace(tmp_path / "ws"), SpaceLimits(max_pixels=1000))
    with pytest.raises(VisitorError, match="over the .* limit"):
        handlers.protect(ctx, str(picture(uploads / "big.png", size=48)), 8)
    broken = uploads / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(VisitorError, match="broken.png"):
        handlers.protect(ctx, str(broken), 8)
    assert visitor_files(ctx.workspace.root) == [] and [p.name for p in ctx.workspace.root.iterdir()] == [space.Workspace.LOCK_NAME]


def test_uploads_of_requests_refused_with_queue_full_go_with_the_timer(serve, tmp_path):
    from gradio_client import handle_file

    limits = SpaceLimits(queue_size=1, concurrency=1, workspace_max_age_s=4)
    url, workspace = serve(limits, slow_s=1.5)
    images = [picture(tmp_path / f"visitor{index}.png", seed=index) for index in range(4)]

    def visit(index: int) -> tuple[str, bool]:
        """The outcome, and for a refusal whether its upload was on the server at that moment (looked at then:
        the served requests, verdict included, can outlast the 4 s age, after which the timer has removed it)."""
        try:
            client_for(url, tmp_path / f"client{index}").predict(handle_file(str(images[index])), 8, "auto", True, 0, api_name="/protect")
            return "served", False
        except Exception as error:
            return str(error), images[index].read_bytes() in stored_bytes(workspace)

    with ThreadPoolExecutor(len(images)) as pool:
        outcomes = list(pool.map(visit, range(len(images))))
    assert any("Queue is full" in outcome for outcome, _ in outcomes), outcomes
    assert any(kept for outcome, kept in outcomes if "Queue is full" in outcome), "a refused request's upload is on the server"  # Gradio received it
    # No request arrives from now on: the timer alone removes every upload and result, folders included
    # (Gradio's own delete_cache removes only the files it served, and leaves their content-hash folders).
    def entries() -> list[str]:
        return sorted(set(path.name for path in workspace.root.iterdir()) - space.Workspace.KEPT - workspace.page_files)

    assert entries(), "the requests stored nothing"
    assert wait_until(lambda: entries() == [], timeout=limits.workspace_max_age_s + 5 * limits.sweep_every_s + 5)


def test_one_visitors_batch_never_removes_anothers_identical_upload(serve, tmp_path):
    import httpx

    url, workspace = serve(SpaceLimits())
    same = picture(tmp_path / "cat.png").read_bytes()
    shared = [httpx.post(f"{url}gradio_api/upload", files={"files": ("cat.png", same)}).json()[0] for _ in range(2)]
    assert shared[0] == shared[1] and Path(shared[0]).is_relative_to(workspace.root)  # Gradio's cache: one path for both visitors
    ctx = SpaceContext(space.LoadOutcome(dummy_space_protector()), workspace, SpaceLimits())
    handlers.batch(ctx, [shared[0]], 8, "auto", True)  # visitor A
    out = handlers.protect(ctx, shared[1], 8)  # visitor B, afterwards, on the upload it holds
    assert Path(out.png).exists() and Path(shared[1]).read_bytes() == same
