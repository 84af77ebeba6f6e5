"""The Space's handlers called directly (no server) with a dummy Protector; its limits, its
workspace sweeps, its clean-up on SIGTERM, and how it names the mimic family.

Dummy random models: plumbing, limits and file handling, never protection strength.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastprotect.dummy import dummy_space_protector
from fastprotect.vocabulary import MAX_REFINE_STEPS
from webapp import handlers, space
from webapp.handlers import SpaceContext, VisitorError
from webapp.limits import SpaceLimits

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png(path: Path, width: int = 48, height: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def protector():
    return dummy_space_protector()


@pytest.fixture
def ctx(protector, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    return SpaceContext(space.LoadOutcome(protector), space.Workspace(tmp_path / "ws"), SpaceLimits())


def uploads_of(ctx: SpaceContext) -> Path:
    """The test's upload folder, beside its workspace (the ``ctx`` fixture makes it)."""
    return ctx.workspace.root.parent / "uploads"


def upload(ctx: SpaceContext, name: str = "my photo.png", **size) -> str:
    return str(png(uploads_of(ctx) / name, **size))


def test_protect_returns_the_page_outputs_and_keeps_the_original_for_another_strength(ctx):
    source = upload(ctx)
    out = handlers.protect(ctx, source, 8, "auto", False, 0)
    assert Path(out.png).name == "my photo_protected_eta8.png" and Path(out.png).exists()
    assert out.verdict.startswith("**Protected with Standard strength") and " s." in out.verdict
    assert "meaning" in out.details and "until shown" in out.details
    assert out.info["timings_s"]["until shown"] > 0
    assert {"verdict", "pictures"} <= set(out.info["timings_s"]) and "time: pictures" in out.details  # where the wait goes
    assert all(Path(out.last[key]).exists() for key in ("clean", "protected"))  # the mimic tab's copies
    stronger = handlers.protect(ctx, source, 12)  # the visitor tries another strength on the same upload
    assert Path(stronger.png).name == "my photo_protected_eta12.png"
    Path(source).unlink()  # what the workspace's timer does after 15 minutes (webapp.privacy.Sweeper)
    with pytest.raises(VisitorError, match="no longer on the server"):
        handlers.protect(ctx, source, 8)


def flat_drawing(path: Path) -> np.ndarray:
    """A flat red fill with a speck of texture in one corner, saved at ``path``: what the texture budget leaves alone."""
    picture = np.full((64, 64, 3), (200, 40, 40), dtype=np.uint8)
    picture[:6, :6] = np.random.default_rng(0).integers(0, 256, (6, 6, 3))
    Image.fromarray(picture).save(path)
    return picture


def generator_protector(**config):
    """A dummy generator Protector whose checkpoint config carries ``config`` (by default the bundled one's
    minimum energy, 2.5 levels under a cap of 3.5)."""
    from fastprotect.dummy import dummy_autoencoder, dummy_generator
    from fastprotect.protect import Protector

    return Protector(dummy_autoencoder(), generator=dummy_generator(**{"rms_levels": 3.5, "fill_rms_levels": 2.5, **config}))


def generator_context(ctx: SpaceContext, folder: Path, **config) -> SpaceContext:
    return SpaceContext(space.LoadOutcome(generator_protector(**config)), space.Workspace(folder), SpaceLimits())


def test_lift_flat_images_is_on_with_the_generator_unless_turned_off_and_needs_the_generator(ctx, tmp_path):
    flat = uploads_of(ctx) / "flat.png"
    picture = flat_drawing(flat)
    with pytest.raises(VisitorError, match="needs the generator; this Space runs the mixture"):
        handlers.protect(ctx, str(flat), 8, "auto", True, 0, True)
    for lift in (None, False):  # on a mixture there is nothing to turn off: no lift, no mark in the name
        assert Path(handlers.protect(ctx, str(flat), 8, "auto", True, 0, lift).png).name == "flat_protected_eta8.png"
    with_generator = generator_context(ctx, tmp_path / "ws2")
    changed = {}
    for lift in (None, True, False):  # not given (the page's default and the API's): on
        out = handlers.protect(with_generator, str(flat), 8, "auto", True, 0, lift)
        assert Path(out.png).name == ("flat_protected_eta8_unlifted.png" if lift is False else "flat_protected_eta8.png")
        assert ("flat images not lifted" in out.verdict) == (lift is False)
        with Image.open(out.png) as result:
            changed[lift] = np.sqrt(np.square(np.asarray(result, dtype=int) - picture).mean())  # RMS, what the lift raises
        assert np.abs(np.asarray(Image.open(out.png), dtype=int) - picture).max() <= 8  # the budget still holds
    # the flat fill is no longer left alone (this dummy network's pattern reaches the floor's ceiling before 2.5 levels)
    assert changed[None] == changed[True] > 1.5 * changed[False]


def test_download_names_carry_the_settings(ctx):
    assert Path(handlers.protect(ctx, upload(ctx, "a.png"), 12).png).name == "a_protected_eta12.png"
    assert Path(handlers.protect(ctx, upload(ctx, "b.jpg.png"), 4).png).name == "b_protected_eta4.png"


def test_examples_are_never_deleted(ctx):
    from webapp.examples import make_example_images

    example = make_example_images(ctx.workspace.root / "examples", size=64)[0]
    out = handlers.protect(ctx, str(example), 8)
    assert example.exists() and out.last is not None
    # Gradio serves an example from its upload folder, which in the Space is the workspace itself (webapp.privacy)
    copy = png(ctx.workspace.root / "sunset_hills.png")
    handlers.protect(ctx, str(copy), 8)
    handlers.protect(ctx, str(copy), 8)  # a second click on the same example
    assert copy.exists()


def test_lift_flat_images_uses_the_checkpoints_own_minimum_energy(ctx, tmp_path):
    """A checkpoint whose energy cap (2 levels) is below the bundled one's minimum energy (2.5): the Space asks for
    the checkpoint's own (1.5), so a default request works and matches the library's default exactly."""
    with_generator = generator_context(ctx, tmp_path / "ws2", rms_levels=2.0, fill_rms_levels=1.5)
    assert handlers.flat_min_energy(with_generator.protector) == 1.5
    flat_drawing(uploads_of(ctx) / "flat.png")
    out = handlers.protect(with_generator, str(uploads_of(ctx) / "flat.png"))  # the page's defaults: lifted
    library = with_generator.protector.protect(space.load_image(uploads_of(ctx) / "flat.png")).image
    assert np.array_equal(np.asarray(Image.open(out.png).convert("RGB")), np.asarray(space.tensor_to_pil(library)))


def test_whole_numbers_or_one_sentence(ctx):
    with pytest.raises(VisitorError, match=r"^Refine steps must be a whole number from 0 to 50; got 2\.5\.$"):
        handlers.protect(ctx, upload(ctx), 8, "auto", True, 2.5)  # never silently run as 2
    with pytest.raises(VisitorError, match=r"^The strength η \(in levels of 255\) must be a whole number from 1 to 32; got 'abc'\.$") as caught:
        handlers.protect(ctx, upload(ctx), "abc")
    assert "invalid literal" not in str(caught.value)
    with pytest.raises(VisitorError, match=r"^Target must be one of .*; got 'medium'\.$"):
        handlers.protect(ctx, upload(ctx), 8, "medium")
    assert handlers.options(8.0, "auto", True, 3.0).refine_steps == 3  # a whole float is a whole number


def test_a_result_that_finishes_after_a_new_upload_is_not_shown_beside_it(ctx):
    """Protect A; while it runs the page's image becomes B: A's picture, download and numbers never appear."""
    a, b = upload(ctx, "a.png"), upload(ctx, "b.png", seed=1)

    def visitor_uploads_b(fraction, stage):
        ctx.sessions.update("visitor", upload=b)

    shown = list(handlers.protect_steps(ctx, a, progress=visitor_uploads_b, session="visitor"))
    assert shown == [handlers.reset_outputs(handlers.STALE_IMAGE)]
    # The same run for another visitor (or an API client, with no page) is not affected.
    assert handlers.protect(ctx, a, progress=visitor_uploads_b, session="someone else").png is not None
    ctx.sessions.update("visitor", upload=a)  # the visitor drops A again and presses Protect
    steps = handlers.protect_steps(ctx, a, session="visitor")
    first = next(steps)  # the protected image is shown first …
    assert first.png is not None and handlers.MEASURING in first.verdict and first.last is None
    ctx.sessions.update("visitor", upload=b)  # … and B arrives before the verdict: the result is withdrawn
    assert list(steps) == [handlers.reset_outputs(handlers.STALE_IMAGE)]


def test_a_result_whose_settings_changed_is_marked(ctx):
    source = upload(ctx)

    def visitor_picks_strong(fraction, stage):
        ctx.sessions.update("visitor", settings=handlers.page_settings(ctx, 12, "auto", True, 0, None))

    out = handlers.protect(ctx, source, 8, "auto", True, 0, progress=visitor_picks_strong, session="visitor")
    assert out.verdict.startswith("⚠️ **Made with Standard strength") and "settings have changed" in out.verdict
    assert out.png is not None  # marked, not withdrawn: the image is still the one it was made from
    now = handlers.page_settings(ctx, 8, "auto", True, 0, None)
    assert handlers.marked(out.last["verdict_markdown"], out.last["settings"], now) == out.last["verdict_markdown"]


def test_mimics_view_names_its_image_and_repeats_the_results_own_numbers(tmp_path):
    """One measurement per result: Details and Mimic's view show the verdict's numbers, not a second measurement."""
    from tests.launch_dummy_app import shared_lpips_backbone

    if shared_lpips_backbone() is None:
        pytest.skip("needs the LPIPS AlexNet weights in ../shared/weights")
    protector = dummy_space_protector(lpips_backbone=shared_lpips_backbone())
    ctx = SpaceContext(space.LoadOutcome(protector), space.Workspace(tmp_path / "ws"), SpaceLimits())
    out = handlers.protect(ctx, str(png(tmp_path / "sunflower.png", 96, 80)), 8)
    verdict = out.info["verdict"]
    lpips, damage = handlers.number(verdict["lpips"]), handlers.number(verdict["damage"])
    assert f"LPIPS {lpips}" in out.verdict and f"| {lpips} |" in out.details and f"| {damage} |" in out.details
    assert "lpips" not in out.info and "psnr_db" not in out.info  # no second, full-image measurement
    seen = handlers.round_trip(ctx, out.last)
    assert "**sunflower.png**, protected with Standard strength" in seen.markdown
    assert f"| {lpips} |" in seen.markdown and f"| {damage} |" in seen.markdown
    assert handlers.showing(out.last).startswith("Your protected **sunflower.png**")


def test_only_settings_that_were_used_are_shown(ctx, tmp_path):
    with_generator = generator_context(ctx, tmp_path / "ws2")
    out = handlers.protect(with_generator, upload(ctx), 8, "high", False, 0)  # the generator writes its own pattern
    trained = with_generator.protector.generator.config.target
    assert out.info["target"] == trained != "high" and "adaptive_strength" not in out.info
    assert "| target pattern | high" not in out.details and "target high" not in out.verdict and "adaptive" not in out.verdict
    refined = handlers.protect(with_generator, upload(ctx), 8, "high", False, 1)  # refine steps do use it
    assert refined.info["target"] == "high" and "target high" in refined.verdict
    assert handlers.number(-0.0004) == "0.000" and handlers.number(-0.0006) == "-0.001" and handlers.number(None) == "n/a"


def test_bad_requests_are_one_line(ctx):
    with pytest.raises(VisitorError, match="Upload an image first"):
        handlers.protect(ctx, None)
    with pytest.raises(VisitorError, match="Refine steps"):
        handlers.protect(ctx, upload(ctx), 8, "auto", True, MAX_REFINE_STEPS + 1)
    with pytest.raises(VisitorError, match="strength"):
        handlers.protect(ctx, upload(ctx), 99)
    small = SpaceContext(ctx.loaded, ctx.workspace, SpaceLimits(max_pixels=1000))
    with pytest.raises(VisitorError, match="MP limit"):
        handlers.protect(small, upload(small))


def test_disk_cap_refuses_a_request(ctx):
    tight = SpaceContext(ctx.loaded, ctx.workspace, SpaceLimits(request_disk_bytes=1_000_000))
    with pytest.raises(VisitorError, match="limit per request") as caught:
        handlers.protect(tight, upload(tight, width=400, height=300))
    assert "\n" not in str(caught.value)


def test_batch_caps_files_and_summed_pixels(ctx):
    files = [upload(ctx, f"f{i}.png", width=64, height=64, seed=i) for i in range(3)]
    capped = SpaceContext(ctx.loaded, ctx.workspace, SpaceLimits(batch_max_pixels=10_000))
    with pytest.raises(VisitorError, match="MP in all"):
        handlers.batch(capped, files, 8, "auto", False)
    few = SpaceContext(ctx.loaded, ctx.workspace, SpaceLimits(max_batch_files=2))
    with pytest.raises(VisitorError, match="at most 2"):
        handlers.batch(few, files, 8, "auto", False)
    out = handlers.batch(ctx, files, 8, "auto", False)
    assert Path(out.zip_path).exists() and len(out.pairs) == 3 and out.warning is None
    assert all(Path(path).exists() for path in files)  # kept for the timer: another visitor may share an upload (tests/test_privacy.py)
    assert all(Path(path).exists() for pair in out.pairs for path in pair)  # the duel's copies kept


def test_batch_runs_again_with_another_strength(ctx):
    files = [upload(ctx, f"f{i}.png", width=64, height=64, seed=i) for i in range(2)]
    first = handlers.batch(ctx, files, 8, "auto", False)
    again = handlers.batch(ctx, files, 12, "auto", False)  # the same files, still in the page's file box
    with zipfile.ZipFile(first.zip_path) as one, zipfile.ZipFile(again.zip_path) as two:
        assert "f0_protected_eta8.png" in one.namelist() and "f0_protected_eta12.png" in two.namelist()
    assert again.warning is None and [row[1] for row in again.report] == ["ok", "ok"]


def test_batch_errors_are_shown_whole(ctx):
    good = upload(ctx, "good.png")
    broken = uploads_of(ctx) / "broken.png"
    broken.write_bytes(Path(good).read_bytes()[:60])
    out = handlers.batch(ctx, [good, str(broken)], 8, "auto", False)
    message = next(row for row in out.report if row[0] == "broken.png")[-1]
    assert len(message) > 20 and message.rstrip(".") in out.warning
    assert out.warning.startswith("1 of 2 files could not be protected. broken.png: ")


def test_batch_lifts_flat_images_too_and_names_its_files_so(ctx, tmp_path):
    with pytest.raises(VisitorError, match="needs the generator; this Space runs the mixture"):
        handlers.batch(ctx, [str(uploads_of(ctx) / "any.png")], 8, "auto", True, True)
    with_generator = generator_context(ctx, tmp_path / "ws2")
    changed = {}
    for lift in (False, None):  # the batch deletes its uploads: one fresh copy per run; not given: on
        picture = flat_drawing(uploads_of(ctx) / "flat.png")
        out = handlers.batch(with_generator, [str(uploads_of(ctx) / "flat.png")], 8, "auto", True, lift)
        with zipfile.ZipFile(out.zip_path) as archive:
            names = set(archive.namelist())
            png_name = "flat_protected_eta8_unlifted.png" if lift is False else "flat_protected_eta8.png"
            assert png_name in names and "report.csv" in names
            with archive.open(png_name) as member:
                result = np.asarray(Image.open(member).convert("RGB"), dtype=int)
        assert np.abs(result - picture).max() <= 8  # the budget still holds
        changed[lift] = np.sqrt(np.square(result - picture).mean())  # RMS, what the lift raises
    assert changed[None] > 1.5 * changed[False]  # the same lift as on the Protect tab


def test_round_trip_follows_the_last_result_and_expires_cleanly(ctx):
    with pytest.raises(VisitorError, match="Protect an image"):
        handlers.round_trip(ctx, None)
    out = handlers.protect(ctx, upload(ctx), 8)
    seen = handlers.round_trip(ctx, out.last)
    assert seen.clean.size == seen.protected.size and "Stable Diffusion 1.5 VAE" in seen.markdown
    assert ctx.workspace.sweep(-1) >= 1  # the sweep removes the result…
    with pytest.raises(VisitorError, match="expired"):  # …and the mimic tab says so in one line
        handlers.round_trip(ctx, out.last)


def test_sweep_keeps_recent_results(ctx):
    out = handlers.protect(ctx, upload(ctx), 8)
    assert ctx.workspace.sweep(ctx.limits.workspace_max_age_s) == 0 and Path(out.png).exists()
    old = time.time() - ctx.limits.workspace_max_age_s - 1
    for path in (Path(out.png).parent, *Path(out.png).parent.iterdir()):  # the folder and every file in it written long ago
        os.utime(path, (old, old), follow_symlinks=False)
    assert ctx.workspace.sweep(ctx.limits.workspace_max_age_s) == 1 and not Path(out.png).exists()


def test_proofs_refuse_without_a_gpu_naming_the_family(ctx):
    with pytest.raises(VisitorError, match="Stable Diffusion 1.5 needs a GPU"):
        handlers.duel(ctx, [], False, [], 100)
    with pytest.raises(VisitorError, match="img2img with Stable Diffusion 1.5 needs a GPU"):
        handlers.img2img(ctx, None, "a photo", 0.5)


def test_family_follows_the_checkpoint(protector):
    assert space.family_of(protector) == protector.mixture.config.mimic_base == "sd-1.5"
    per_image = dummy_space_protector(per_image=True)
    assert space.family_of(per_image) == "sd-1.5"  # the dummy's encoder kind is sd-vae


def test_the_bundled_checkpoints_facts_are_read_without_loading_it():
    """The page's layout comes from config.json alone (so the page answers before the weights load): the
    network the numbers are measured with, the family named, and the checkpoint's own minimum energy."""
    import json

    from fastprotect.bundle import bundled_checkpoint

    config = json.loads((bundled_checkpoint() / "config.json").read_text())
    facts = space.CheckpointFacts.read()
    assert (facts.method, facts.family, facts.encoder_kind) == (config["method"], config["mimic_base"], config["encoder_kind"])
    assert facts.min_energy == config["fill_rms_levels"] and facts.target == config["target"]


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FASTPROTECT_MAX_BATCH_FILES", "5")
    monkeypatch.setenv("FASTPROTECT_SPACE_MAX_PIXELS", "1000000")
    limits = SpaceLimits.from_environment()
    assert limits.max_batch_files == 5 and limits.max_pixels == 1_000_000 and limits.max_refine_steps == MAX_REFINE_STEPS
    with pytest.raises(Exception):
        limits.max_pixels = 1  # frozen
    with pytest.raises(ValueError):
        SpaceLimits(queue_size=0)


def test_sigterm_and_sigint_remove_the_workspace():
    """The dummy Space in a subprocess: SIGTERM (then, in a second one, SIGINT) removes its temp folder."""
    for number in (signal.SIGTERM, signal.SIGINT):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen([sys.executable, "-m", "tests.launch_dummy_app", "--port", str(free_port()), "--no-lpips"], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            workspace, lines = None, []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                lines.append(line)
                if line.startswith("WORKSPACE "):
                    workspace = Path(line.split(" ", 1)[1].strip())
                if line.startswith("READY") or (not line and process.poll() is not None):
                    break
            assert workspace is not None and workspace.exists(), "".join(lines)
            process.send_signal(number)
            process.wait(timeout=30)
            assert not workspace.exists(), f"signal {number}: {workspace} left behind"
        finally:
            if process.poll() is None:
                process.kill()


def test_zero_gpu_decorates_only_the_proofs(protector, tmp_path, monkeypatch):
    """With the `spaces` package (ZeroGPU), protection stays on the CPU: only img2img and the duel
    are wrapped in spaces.GPU (the round trip too, but only with a mimic loaded)."""
    import types

    import app

    decorated: list[str] = []

    def gpu(duration):
        def wrap(function):
            decorated.append(function.__name__)
            return function

        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    demo = app.build_demo(protector, workspace=space.Workspace(tmp_path / "ws"), limits=SpaceLimits(), examples=False)
    assert sorted(decorated) == ["duel", "img2img"]
    texts = " ".join(str(block.get_config().get("value", "")) for block in demo.blocks.values())
    assert "Stable Diffusion 1.5" in texts and "no GPU" in texts


def test_with_a_mimic_loaded_the_round_trip_uses_its_vae(ctx):
    """The mimic's own VAE (here the dummy SD-1.5 stack on CPU), named on the page."""
    from attack.mimic import Mimic
    from fastprotect.dummy import dummy_sd15_pipeline

    pipe = dummy_sd15_pipeline(0)
    ctx.mimic = Mimic("sd-1.5", pipe, pipe)
    out = handlers.protect(ctx, upload(ctx, width=64, height=48), 8)
    seen = handlers.round_trip(ctx, out.last)
    assert "the VAE of Stable Diffusion 1.5 (the model a mimic would fine-tune)" in seen.markdown
    assert seen.clean.size == seen.protected.size


def test_the_strength_presets_quote_the_measured_visibility_of_the_bundled_generator():
    """The page's preset labels repeat numbers from the evaluation: they must be the numbers in the
    results file of the shipped checkpoint's rows, not stale ones from an earlier checkpoint."""
    import json

    rows = json.loads((Path(__file__).parents[1] / "benchmarks/results/noise_control_cpu_taef2.json").read_text())["rows"]
    for name, levels, lpips in handlers.PRESETS:
        label = next(key for key in rows if key in (f"generator η {levels}", f"generator η {levels} (default)"))
        assert round(rows[label]["all"]["lpips"], 3) == lpips, (name, label)


def test_the_clean_half_of_the_verdict_is_measured_on_upload_so_a_click_runs_two_round_trips_and_the_same_numbers(tmp_path):
    from tests.launch_dummy_app import shared_lpips_backbone

    if shared_lpips_backbone() is None:
        pytest.skip("needs the LPIPS AlexNet weights in ../shared/weights")
    protector = dummy_space_protector(lpips_backbone=shared_lpips_backbone())
    ctx = SpaceContext(space.LoadOutcome(protector), space.Workspace(tmp_path / "ws"), SpaceLimits())
    source = str(png(tmp_path / "sunflower.png", 96, 80))
    cold = handlers.protect(ctx, source, 8).info["verdict"]  # nothing prepared: three round trips
    batches: list[int] = []
    real = protector.autoencoder.round_trip
    protector.autoencoder.round_trip = lambda batch: batches.append(batch.shape[0]) or real(batch)
    assert handlers.prepare_verdict(ctx, source)  # what the page does when the image lands in the box: returns at once
    assert ctx.references.get(source, timeout_s=60) is not None  # computed on the background thread
    assert batches == [1] and len(ctx.references) == 1
    warm = handlers.protect(ctx, source, 8).info["verdict"]
    assert batches == [1, 1, 1]  # the click: the protected copy and the noise only
    assert warm == cold  # the same numbers and sentence
    assert not handlers.prepare_verdict(ctx, str(tmp_path / "gone.png"))  # a vanished upload: silent, the click reports it
    assert not handlers.prepare_verdict(ctx, None)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert handlers.prepare_verdict(ctx, str(broken)) and ctx.references.get(str(broken), timeout_s=60) is None
    assert len(ctx.references) == 1  # the unreadable one left nothing


def test_details_pictures_of_a_large_image_are_every_kth_pixel_of_the_full_size_ones(tmp_path):
    """δ amplified and the texture budget at most the view's size, from δ's own values (no averaging to grey)."""
    from fastprotect.images import levels_to_pixels

    protector = generator_protector()
    source = png(tmp_path / "wide.png", 200, 150)
    (tmp_path / "out").mkdir(), (tmp_path / "whole").mkdir()
    outcome = space.protect_upload(protector, source, space.ProtectOptions(), tmp_path / "out", view_max_side=64, compute_metrics=False)
    assert outcome.view_stride == 4  # ceil(200 / 64)
    perturbation, budget = outcome.perturbation_view, outcome.lpips_map_view
    assert perturbation.size == budget.size == (50, 38)
    full = space.perturbation_view(levels_to_pixels(outcome.result.image) - levels_to_pixels(outcome.result.original), outcome.eta)
    assert np.array_equal(np.asarray(perturbation), np.asarray(full)[::4, ::4])
    small = space.protect_upload(protector, source, space.ProtectOptions(), tmp_path / "whole", view_max_side=1536, compute_metrics=False)
    assert small.view_stride == 1 and small.perturbation_view.size == (200, 150)  # fits: every pixel
