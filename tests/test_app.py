"""The Space through its public API (gradio_client against a live server) and its helpers.

Dummy random models (tests/launch_dummy_app.py): these tests check plumbing, limits and file
handling, never protection strength.
"""

from __future__ import annotations

import io
import json
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

import app  # noqa: E402
from fastprotect.dummy import dummy_sd15_pipeline, dummy_space_protector  # noqa: E402
from webapp import examples, space, views  # noqa: E402
from webapp.limits import SpaceLimits  # noqa: E402
from tests.launch_dummy_app import build_dummy_demo, shared_lpips_backbone  # noqa: E402

ETA_LEVELS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rgba_png(path: Path, width: int = 48, height: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    alpha = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    alpha[:5] = 0  # fully transparent rows: their colour must survive too
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workspace = space.Workspace(tmp_path_factory.mktemp("space"))
    limits = SpaceLimits(max_batch_files=3)
    demo = build_dummy_demo(workspace=workspace, lpips_backbone=shared_lpips_backbone(), limits=limits)  # LPIPS: real when present
    port = free_port()
    app.launch(demo, limits, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", workspace
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def test_protect_endpoint_returns_png_of_input_size_with_alpha_and_budget(client, tmp_path):
    source = rgba_png(tmp_path / "my photo.png")
    verdict, png, slider, details, perturbation, lpips_map, info = client.predict(
        handle_file(str(source)), ETA_LEVELS, "auto", True, 0, api_name="/protect"
    )
    assert Path(png).name == "my photo_protected_eta8.png"  # the visitor's own name, spaces kept, the setting
    assert "Protected with Standard strength" in verdict and "PSNR" in verdict
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # a real PNG, not WebP/JPEG renamed
    with Image.open(source) as original, Image.open(png) as protected:
        assert protected.format == "PNG" and protected.mode == "RGBA" and protected.size == original.size
        before, after = np.asarray(original), np.asarray(protected)
    assert np.array_equal(before[..., 3], after[..., 3])  # alpha bit-identical
    assert np.abs(before[..., :3].astype(int) - after[..., :3].astype(int)).max() <= ETA_LEVELS
    for shown in (*slider, perturbation):  # every image the page shows is PNG too
        assert Image.open(shown).format == "PNG"
    if shared_lpips_backbone() is not None:  # real LPIPS: adaptive strength ran, its map is shown, the verdict measured
        assert Image.open(lpips_map).format == "PNG" and info["verdict"]["lpips"] is not None and info["adaptive_strength"]
    assert info["width"] == 48 and info["height"] == 40 and info["linf_levels"] <= ETA_LEVELS
    assert {"target", "group", "timings_s", "verdict"} <= set(info) and "PSNR" in details
    assert {"until shown", "verdict"} <= set(info["timings_s"])


def test_protect_endpoint_reports_bad_input_and_keeps_serving(client, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(text)), ETA_LEVELS, "auto", True, 0, api_name="/protect")
    with pytest.raises(Exception, match="Upload an image first"):
        client.predict(None, ETA_LEVELS, "auto", True, 0, api_name="/protect")
    corrupt = tmp_path / "cut.png"
    corrupt.write_bytes(rgba_png(tmp_path / "whole.png").read_bytes()[:100])
    with pytest.raises(Exception, match="cut.png"):
        client.predict(handle_file(str(corrupt)), ETA_LEVELS, "auto", True, 0, api_name="/protect")
    with pytest.raises(Exception, match="Refine steps must be a whole number"):
        client.predict(handle_file(str(rgba_png(tmp_path / "r.png"))), ETA_LEVELS, "auto", True, 51, api_name="/protect")
    with pytest.raises(Exception, match="got 2.5"):  # refused, never run as 2
        client.predict(handle_file(str(rgba_png(tmp_path / "r.png"))), ETA_LEVELS, "auto", True, 2.5, api_name="/protect")
    png = client.predict(handle_file(str(rgba_png(tmp_path / "ok.png"))), ETA_LEVELS, "high", False, 1, api_name="/protect")[1]
    assert Image.open(png).size == (48, 40)


def test_batch_endpoint_keeps_good_files_and_reports_bad_ones(client, tmp_path):
    good = [rgba_png(tmp_path / f"good{i}.png", 64 + 8 * i, 48, seed=i) for i in range(2)]
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(good[0].read_bytes()[:60])  # truncated PNG
    zip_path, report = client.predict(
        [handle_file(str(path)) for path in (good[0], corrupt, good[1])], ETA_LEVELS, "auto", True, api_name="/batch"
    )
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        assert {"good0_protected_eta8.png", "good1_protected_eta8.png", "report.csv", "report.json"} == names
        assert Image.open(io.BytesIO(archive.read("good1_protected_eta8.png"))).size == (72, 48)
        rows = json.loads(archive.read("report.json"))
    assert [row["status"] for row in rows] == ["ok", "error", "ok"]
    assert rows[1]["file"] == "broken.png" and rows[1]["message"]
    shown = report["data"] if isinstance(report, dict) else report
    assert any("broken.png" in map(str, row) and "error" in row for row in shown)


def test_batch_refuses_empty_and_too_many(client, tmp_path):
    with pytest.raises(Exception, match="no files"):
        client.predict([], ETA_LEVELS, "auto", True, api_name="/batch")
    files = [handle_file(str(rgba_png(tmp_path / f"f{i}.png", seed=i))) for i in range(4)]  # the server's limit: 3
    with pytest.raises(Exception, match="at most 3"):
        client.predict(files, ETA_LEVELS, "auto", True, api_name="/batch")


def test_round_trip_after_protect_in_one_session(server, tmp_path):
    session = Client(server[0], verbose=False)
    with pytest.raises(Exception, match="Protect an image"):
        session.predict(api_name="/round_trip")
    session.predict(handle_file(str(rgba_png(tmp_path / "a.png"))), ETA_LEVELS, "auto", True, 0, api_name="/protect")
    clean, protected, _ = session.predict(api_name="/round_trip")
    assert Image.open(clean).size == Image.open(protected).size == (48, 40)


def test_gpu_features_refuse_cleanly_without_gpu(client):
    with pytest.raises(Exception, match="needs a GPU"):
        client.predict([], False, 100, api_name="/lora_duel")


def test_only_the_apps_own_files_are_served(server):
    import httpx

    for path in ("/etc/passwd", str(Path(app.__file__).resolve())):
        response = httpx.get(f"{server[0]}gradio_api/file={path}")
        assert response.status_code in (403, 404), path


def test_expired_result_is_a_short_message(server, tmp_path):
    session = Client(server[0], verbose=False)
    session.predict(handle_file(str(rgba_png(tmp_path / "e.png"))), ETA_LEVELS, "auto", True, 0, api_name="/protect")
    server[1].sweep(-1)  # what the 15-minute sweep does
    with pytest.raises(Exception, match="expired") as caught:
        session.predict(api_name="/round_trip")
    assert "Traceback" not in str(caught.value)


def test_offline_start_shows_a_message_not_a_trace():
    demo = build_dummy_demo(unavailable=True)
    texts = [str(block.get_config().get("value", "")) for block in demo.blocks.values()]
    assert any("Protection is unavailable" in text and "WeightsUnavailableError" in text for text in texts)


def test_per_image_mode_is_announced_and_works(tmp_path):
    protector = dummy_space_protector(per_image=True)
    assert "per-image" in app._status_markdown(space.LoadOutcome(protector))
    outcome = space.protect_upload(protector, rgba_png(tmp_path / "p.png"), space.ProtectOptions(), tmp_path)
    assert outcome.png_path.name == "p_protected_eta8.png"
    assert outcome.info["mode"] == "per-image" and outcome.info["linf_levels"] <= 8


def test_download_names_never_escape_and_keep_the_visitors_name():
    assert space.safe_stem("../../etc/my photo (1).JPG") == "my photo (1)"
    assert space.safe_stem("") == "image"


def test_example_pictures_are_drawn_at_the_asked_size(tmp_path):
    paths = examples.make_example_images(tmp_path, size=64)
    assert len(paths) == 3 and all(Image.open(path).size == (64, 64) for path in paths)


def test_no_server_path_in_any_page_text_or_the_config(tmp_path):
    """The real bundled checkpoint, loaded from this repository: neither the About tab nor /config shows
    where the server keeps its files (the checkpoint's folder, the workspace)."""
    import httpx

    loaded = space.load_space_protector(device="cpu")
    assert loaded.protector is not None, loaded.error
    workspace = space.Workspace(tmp_path / "ws")
    demo = app.build_demo(loaded, workspace=workspace, limits=SpaceLimits(), examples=False)
    port = free_port()
    app.launch(demo, SpaceLimits(), server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        config = httpx.get(f"http://127.0.0.1:{port}/config").text
    finally:
        demo.close()
    repository = str(Path(app.__file__).resolve().parent)
    about = app._about_markdown(demo.space_context)
    assert "taef2-generator" in about  # the checkpoint by its name …
    for text in (about, config):  # … never by its path
        assert repository not in text and str(workspace.root) not in text
    assert space.without_paths("OSError: /srv/app/weights/taef2 not found") == "OSError: taef2 not found"


def test_the_page_answers_while_the_models_load(tmp_path):
    """main() builds the page on a BackgroundLoad: built at once with a loading notice; Protect waits for the models."""
    import threading

    release = threading.Event()

    def slow_load():
        release.wait(30)
        return space.LoadOutcome(dummy_space_protector())

    loading = space.BackgroundLoad(slow_load, space.CheckpointFacts(method="mixture", family="sd-1.5", encoder_kind="sd-vae"))
    demo = app.build_demo(loading, workspace=space.Workspace(tmp_path / "ws"), limits=SpaceLimits(), examples=False)
    texts = " ".join(str(block.get_config().get("value", "")) for block in demo.blocks.values())
    assert app.LOADING in texts and not loading.ready
    ctx = demo.space_context
    assert not app.handlers.prepare_verdict(ctx, str(rgba_png(tmp_path / "early.png")))  # no thread waits for the models
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=app.handlers.protect(ctx, str(rgba_png(tmp_path / "w.png")))))
    worker.start()
    worker.join(0.5)
    assert worker.is_alive()  # waiting for the models, not failing
    release.set()
    worker.join(60)
    assert Path(result["out"].png).exists() and app._status_markdown(ctx.outcome) == ""


@pytest.mark.slow  # ~1–2 min on 2 busy CPU cores: diffusers pipelines, LoRA save/load
def test_attack_glue_runs_on_the_dummy_diffusion_stack(tmp_path):
    """img2img and the LoRA duel wiring, on the dummy SD-1.5 stack on CPU (plumbing only)."""

    pipe, protector = dummy_sd15_pipeline(0), dummy_space_protector()
    pairs = []
    for i in range(4):
        clean = rgba_png(tmp_path / f"c{i}.png", 64, 48, seed=i)
        pairs.append((str(clean), str(space.protect_upload(protector, clean, space.ProtectOptions(), tmp_path).png_path)))
    clean_view, protected_view = views.mimic_img2img(pipe, space.load_image(pairs[0][0]), space.load_image(pairs[0][1]), "a photo", 0.5, steps=2)
    assert clean_view.size == protected_view.size == (64, 48)
    stages = []
    grid, scores = views.lora_duel_from_pairs(pipe, pairs, protector, tmp_path / "duel", 2, lambda f, s: stages.append(s), resolution=32, sample_steps=2)
    assert grid.size[1] == 4 * 128 and set(scores["seconds"]) == {"clean", "protected"}
    assert any("clean LoRA" in stage for stage in stages) and any("protected LoRA" in stage for stage in stages)
    with pytest.raises(space.SpaceInputError, match="4 to 8"):
        views.lora_duel_from_pairs(pipe, pairs[:2], protector, tmp_path / "duel2", 2)
