"""Smoke tests of the benchmark scripts: they run in process on dummy random models and emit their
tables and JSON. Not timed tests: no assertion is made on any number of seconds."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import ablate_speed, latency
from benchmarks.common import build_models, make_protector, parse_size, size_label
from benchmarks.efficacy import load_heldout, make_harness, protect_and_measure
from fastprotect.dummy import dummy_autoencoder
from fastprotect.timing import StageTimer


@pytest.fixture(autouse=True)
def keep_thread_count():
    """The scripts' --threads sets torch's global thread count: give it back to the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_size_parsing() -> None:
    assert parse_size("512") == (512, 512)
    assert parse_size("4096x3072") == (4096, 3072)
    assert size_label(4096, 3072) == "4096×3072" and size_label(512, 512) == "512²"


def test_latency_script_emits_table_and_json(tmp_path, capsys) -> None:
    out, md = tmp_path / "latency.json", tmp_path / "latency.md"
    code = latency.main([
        "--encoder", "dummy", "--sizes", "64,96x64", "--runs", "1", "--warmup", "0", "--pgd-size", "64",
        "--pgd-steps-timed", "1", "--threads", "1", "--checkpoint", str(tmp_path / "no-checkpoint"), "--out", str(out), "--markdown", str(md),
    ])
    assert code == 0
    results = json.loads(out.read_text())
    assert [row["size"] for row in results["sizes"]] == ["64²", "96×64"]
    for row in results["sizes"]:
        assert set(latency.STAGES) | {"total", "cpu"} <= set(row["median_s"])
        assert row["peak_memory_bytes"] > 0
        parts = sum(row["median_s"][stage] for stage in latency.STAGES)
        assert parts == pytest.approx(row["median_s"]["total"], rel=0.05, abs=0.02)
    for key in ("cpu_model", "logical_cores", "torch", "device", "load_average"):
        assert key in results["machine"]
    assert results["mixture"].startswith("random")
    pgd = results["pgd"]
    assert pgd["per_step_s"] > 0 and pgd["photoguard_steps"] == 200 and pgd["photoguard_ratio"] > 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| size |"))
    for stage in latency.STAGES:
        assert f" {stage} " in header
    assert "PhotoGuard default" in printed and "Table 2" in printed
    assert md.read_text().strip() in printed
    assert "Goals (issue 31)" in printed


def test_latency_prints_each_goal_met_or_not_with_its_number() -> None:
    machine = {"device": "cpu", "cpu_model": "x", "logical_cores": 2, "memory_gb": 8, "torch": "t", "torch_threads": 2, "load_average": [0.1]}
    rows = [{"size": "512²", "median_s": {"total": 0.04}, "peak_memory_bytes": 0},
            {"size": "4096×3072", "median_s": {"total": 1.5}, "peak_memory_bytes": int(0.9 * 2**30)}]
    results = {"machine": machine, "sizes": rows, "load_average_end": [0.2]}
    results["verdicts"] = latency.verdicts(results)
    lines = latency.goal_lines(results)
    assert any(line.strip().startswith("met") and "512² end to end ≤ 0.050 s: measured 0.040 s" in line for line in lines)
    assert any(line.strip().startswith("NOT MET") and "4096×3072 end to end ≤ 1.00 s: measured 1.50 s" in line for line in lines)
    assert any(line.strip().startswith("met") and "4096×3072 peak RSS ≤ 1 GB: measured 0.90 GB" in line for line in lines)
    # the goal is the command line's own process where it was measured: its number decides, not this process's
    rows.append({"size": "7296×5472", "median_s": {"total": 9.0}, "peak_memory_bytes": int(1.2 * 2**30),
                 "cli_peak_rss_bytes": int(1.6 * 2**30)})
    results["verdicts"] = latency.verdicts(results)
    lines = latency.goal_lines(results)
    assert any(line.strip().startswith("NOT MET") and "7296×5472 peak RSS of the command line's process ≤ 1.5 GB: measured 1.60 GB"
               in line for line in lines)


def test_the_command_lines_peak_memory_is_its_own_process(tmp_path) -> None:
    """benchmarks.latency runs ``python -m fastprotect`` as a child and reads that child's peak RSS (what the memory
    goals are stated for): more than torch alone, and the PNG is written."""
    from benchmarks.common import test_image_bytes

    if not (latency.DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        pytest.skip("the bundled generator checkpoint is not in this checkout")
    peak, seconds = latency.cli_peak_memory(test_image_bytes(96, 64, images=tmp_path), 96, 64, str(latency.DEFAULT_CHECKPOINT))
    assert 200 * 2**20 < peak < 4 * 2**30 and seconds > 0


def test_latency_on_cuda_without_a_gpu_says_it_was_not_run(capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark would run")
    with pytest.raises(SystemExit) as stop:
        latency.parse_args(["--device", "cuda"])
    assert stop.value.code == 2
    assert "the GPU benchmark was not run" in capsys.readouterr().err


def test_ablation_script_runs(tmp_path, capsys) -> None:
    out = tmp_path / "ablate.json"
    code = ablate_speed.main(["--encoder", "dummy", "--quick", "--size", "64", "--per-domain", "1", "--threads", "1",
                              "--checkpoint", str(tmp_path / "none"), "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert {"assign_size", "map_size", "grad_mode", "channels_last", "half", "batching", "warmup", "png"} <= set(results["ablations"])
    assert "PNG compress level" in capsys.readouterr().out


def test_the_matching_pgd_step_count_is_read_from_the_evaluation_json(tmp_path) -> None:
    checkpoint = tmp_path / "run" / "final"
    checkpoint.mkdir(parents=True)
    steps, source = latency.matched_steps_from_evaluation(str(checkpoint))
    assert steps is None and "no eval.json" in source and "--pgd-match-steps" in source  # never the docs' prose
    (checkpoint.parent / "eval.json").write_text(json.dumps({"pgd_match": {"steps_matching_pull": 5, "steps_matching_damage": None}}))
    assert latency.matched_steps_from_evaluation(str(checkpoint)) == (5, f"{checkpoint.parent / 'eval.json'} (steps_matching_pull)")
    (checkpoint / "eval.json").write_text(json.dumps({"pgd_match": {"steps_matching_pull": 5, "steps_matching_damage": 8}}))
    assert latency.matched_steps_from_evaluation(str(checkpoint))[0] == 8  # damage first, the checkpoint's own file first
    (checkpoint / "eval.json").write_text(json.dumps({"pgd_match": {"steps_matching_pull": None, "steps_matching_damage": None}}))
    assert latency.matched_steps_from_evaluation(str(checkpoint))[0] is None


def test_benchmark_protectors_time_stages_through_the_timer_seam(tmp_path) -> None:
    models = build_models("dummy", tmp_path / "none")
    protector = make_protector(models, "cpu")
    assert isinstance(protector.timer, StageTimer)
    x = torch.rand(1, 3, 40, 48)
    result = protector.protect(x, compute_metrics=False)
    assert {"assign", "select", "resize", "lpips_map", "compose"} <= set(result.info.timings_s)
    # efficacy through the evaluation's harness: same keys as train.evaluate's rows
    mean, outputs, targets = protect_and_measure(protector, make_harness(models), [x])
    assert {"pull", "damage", "lpips", "psnr", "ssim", "linf"} <= set(mean) and len(outputs) == len(targets) == 1


def test_heldout_images_are_scaled_down_never_up(tmp_path) -> None:
    from PIL import Image

    paths = []
    for name, size in (("wide.png", (120, 60)), ("small.png", (30, 20))):
        Image.new("RGB", size, (200, 30, 90)).save(tmp_path / name)
        paths.append(tmp_path / name)
    wide, small = load_heldout(paths, long_side=64)
    assert tuple(wide.shape[-2:]) == (32, 64) and tuple(small.shape[-2:]) == (20, 30)
    assert torch.allclose((wide * 255).round(), wide * 255, atol=1e-4)  # on the 8-bit grid


def test_noise_control_ablation_variants_take_away_exactly_one_part() -> None:
    """The ablation rows of benchmarks.noise_control: the same weights, one part of the generator off."""
    from benchmarks.noise_control import generator_variant
    from fastprotect.dummy import dummy_protector
    from fastprotect.vocabulary import eta_from_levels

    protector = dummy_protector(with_generator=True)
    image = torch.full((1, 3, 48, 48), 0.5)
    image[..., 24:] = torch.rand(1, 3, 48, 24, generator=torch.Generator().manual_seed(0))  # left flat, right texture
    image = (image * 255).round() / 255  # on the 8-bit grid, as every loaded image is
    eta = eta_from_levels(8)

    def delta(p) -> torch.Tensor:
        return p.protect(image, eta=eta, compute_metrics=False).image - image

    uniform = generator_variant(protector, mask_floor=1.0)
    assert torch.equal(next(uniform.generator.parameters()), next(protector.generator.parameters()))
    assert delta(uniform)[..., :20].abs().mean() > 3 * delta(protector)[..., :20].abs().mean()  # flat area now gets budget
    uncapped = generator_variant(protector, rms_levels=255.0)
    assert delta(uncapped).pow(2).mean() >= delta(protector).pow(2).mean()
    assert delta(uncapped).abs().max() <= eta + 1e-6  # the L∞ box stays
    shrunk = generator_variant(protector, net_downscale=2)
    assert torch.equal(next(shrunk.generator.parameters()), next(protector.generator.parameters()))
    assert not torch.equal(delta(shrunk), delta(protector))  # the same weights on a half-size copy
    assert delta(shrunk).abs().max() <= eta + 1e-6


def test_noise_control_dev_sample_takes_each_domain_in_name_order_and_refuses_the_mixture_rows(tmp_path) -> None:
    """--sample dev: the whole dev folder (the generator never trained on it), balanced per domain; the mixture did
    train on most of it, so its rows are refused rather than reported on their own training images."""
    from benchmarks import noise_control

    for domain in noise_control.DOMAINS:
        (tmp_path / domain).mkdir()
        for index in (3, 1, 2):
            (tmp_path / domain / f"{domain}_{index}.png").write_bytes(b"")
        (tmp_path / domain / "notes.txt").write_text("not an image")
    names = noise_control.sample_names("dev", tmp_path, per_domain=2, offset=1)
    assert names == [f"{d}/{d}_{i}.png" for d in noise_control.DOMAINS for i in (2, 3)]
    heldout = noise_control.sample_names("heldout", tmp_path, per_domain=1)
    assert [n.split("/")[0] for n in heldout] == list(noise_control.DOMAINS)
    with pytest.raises(SystemExit):
        noise_control.main(["--sample", "dev", "--rows", "mixture", "--images", str(tmp_path)])


def test_the_surrogate_encoder_learns_the_teachers_latents_and_reloads_exactly(tmp_path) -> None:
    """benchmarks.surrogate_encoder: a different network distilled from the teacher, saved and loaded back."""
    from benchmarks.surrogate_encoder import distil, mimic_autoencoder
    from train.surrogate import SurrogateEncoder, load_surrogate, save_surrogate

    teacher = dummy_autoencoder("taef2", seed=1)
    images = (torch.rand(6, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 255).round().to(torch.uint8)
    widths = (8, 8, 16)
    net, losses = distil(teacher.encoder, images, steps=60, batch=4, crop=32, lr=3e-3, widths=widths, blocks=1, log_every=10)
    assert losses[-1] < 0.5 * losses[0]  # it learns the teacher's function, from its own random start
    surrogate = SurrogateEncoder(net, widths)
    x = images[:2].float() / 255
    assert surrogate.encode(x).shape == teacher.encoder.encode(x).shape  # the teacher's latent space, so its decoder reads it
    assert not any(p.requires_grad for p in surrogate.parameters())

    save_surrogate(net, tmp_path / "s", {"widths": list(widths), "blocks": 1})
    again = load_surrogate(tmp_path / "s")
    assert torch.equal(again.encode(x), surrogate.encode(x))
    mimic = mimic_autoencoder(again, teacher)
    assert mimic.encoder is again and mimic.decoder is teacher.decoder and mimic.round_trip(x).shape == x.shape
    with pytest.raises(FileNotFoundError, match="python -m benchmarks.surrogate_encoder"):
        load_surrogate(tmp_path / "empty")


def test_noise_control_rows_keep_earlier_rows_and_show_the_transfer_share(tmp_path) -> None:
    """benchmarks.noise_control: a row measured through one mimic; the results file keeps the rows of earlier
    runs; a row scored through the surrogate shows its damage as a share of TAEF2's (the transfer column)."""
    from benchmarks.noise_control import (
        Board,
        measure_per_image,
        row_line,
        summarise_row,
    )
    from fastprotect.dummy import dummy_perceptual, dummy_protector
    from fastprotect.evaluation import Harness

    protector = dummy_protector()
    harness = Harness(protector.autoencoder, dummy_perceptual(), protector.target_images, perceptual_vgg=dummy_perceptual(1), extended=True)
    images = (torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    protected = (images + 0.03 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    row = summarise_row(measure_per_image(harness, images, protected, torch.zeros(4, dtype=torch.long), robust=True),
                        ["cartoon", "cartoon", "face", "face"])
    assert set(row) == {"all", "cartoon", "face"}
    pooled = row["all"]
    assert pooled["ratio"] == pytest.approx(pooled["damage"] / max(pooled["noise_damage"], 1e-6))
    assert {"survives_jpeg75", "survives_resize-half", "lpips_vgg", "flat_ratio"} <= pooled.keys()

    out = tmp_path / "rows.json"
    out.write_text(json.dumps({"rows": {"an earlier row": {"all": {}}}}))
    board = Board(harness, out, "a dummy mimic")
    board.rows["this row"] = row
    board.write({"device": "cpu"}, ["cartoon/a.png"], 32)
    written = json.loads(out.read_text())
    assert set(written["rows"]) == {"an earlier row", "this row"} and written["mimic"] == "a dummy mimic"
    assert "%" not in row_line("r", row).split("|")[-2]  # no transfer column through TAEF2 itself
    pooled["transfer"] = 0.5
    assert row_line("r", row).endswith("| 50% |")


def test_a_second_mimic_reuses_the_visibility_and_scores_its_own_damage() -> None:
    """Visibility does not depend on the mimic: noise_control measures it once per row and hands it to the
    other mimics' boards, which measure only what their own encoder makes of the images."""
    from benchmarks.noise_control import (
        VISIBILITY,
        measure_per_image,
        same_energy_noise,
    )
    from fastprotect.dummy import dummy_autoencoder, dummy_perceptual, dummy_protector
    from fastprotect.evaluation import Harness

    protector = dummy_protector()
    images = (torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    protected = (images + 0.03 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    targets, noise = torch.zeros(2, dtype=torch.long), same_energy_noise(images, protected)
    judges = {"perceptual_vgg": dummy_perceptual(1), "extended": True}
    first = Harness(protector.autoencoder, dummy_perceptual(), protector.target_images, **judges)
    other = Harness(dummy_autoencoder(seed=7), dummy_perceptual(), protector.target_images, **judges)
    on_first = measure_per_image(first, images, protected, targets, False, noise)
    given = measure_per_image(other, images, protected, targets, False, noise, {key: on_first[key] for key in VISIBILITY})
    alone = measure_per_image(other, images, protected, targets, False, noise)
    for key in VISIBILITY:
        assert torch.allclose(given[key], alone[key])
    for key in ("damage", "noise_damage", "pull"):
        assert torch.allclose(given[key], alone[key]) and not torch.allclose(given[key], on_first[key])


def test_eot_pgd_sees_jpeg_in_about_half_of_its_steps_with_the_same_draws_every_run() -> None:
    from benchmarks.noise_control import jpeg_half_the_time

    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    first, again = jpeg_half_the_time(3), jpeg_half_the_time(3)
    changed = []
    for _ in range(40):
        out = first(images)
        assert torch.equal(out, again(images)) and out.shape == images.shape
        changed.append(not torch.equal(out, images))
    assert 10 <= sum(changed) <= 30  # JPEG about half the time, identity otherwise


def test_noise_control_keeps_per_image_values_beside_the_rows_and_drops_them_for_other_images(tmp_path) -> None:
    """The results file holds every row's per-image values (benchmarks.intervals draws from them); rows of an
    earlier run on other images keep their means but not values that would no longer line up with "images"."""
    from benchmarks.noise_control import Board, measure_per_image, summarise_row
    from fastprotect.dummy import dummy_perceptual, dummy_protector
    from fastprotect.evaluation import Harness

    protector = dummy_protector()
    harness = Harness(protector.autoencoder, dummy_perceptual(), protector.target_images, perceptual_vgg=dummy_perceptual(1), extended=True)
    images = (torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    protected = (images + 0.03 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    domains = ["cartoon", "cartoon", "face", "face"]
    values = measure_per_image(harness, images, protected, torch.zeros(4, dtype=torch.long), robust=False)
    assert all(v.shape == (4,) for v in values.values()) and "damage_jpeg75" not in values
    row = summarise_row(values, domains)
    assert row["face"]["damage"] == pytest.approx(float(values["damage"][2:].mean()))
    assert "survives_jpeg75" not in row["all"]

    out = tmp_path / "rows.json"
    board = Board(harness, out, "a dummy mimic")
    board.add("first", values, domains)
    board.write({"device": "cpu"}, ["a", "b", "c", "d"], 32)
    written = json.loads(out.read_text())
    assert written["per_image"]["first"]["damage"] == pytest.approx(values["damage"].tolist(), abs=1e-6)
    again = Board(harness, out, "a dummy mimic")
    again.add("second", values, domains)
    again.write({"device": "cpu"}, ["a", "b", "c", "d"], 32)
    assert set(json.loads(out.read_text())["per_image"]) == {"first", "second"}
    other = Board(harness, out, "a dummy mimic")
    other.add("third", values, domains)
    other.write({"device": "cpu"}, ["e", "f", "g", "h"], 32)
    written = json.loads(out.read_text())
    assert set(written["per_image"]) == {"third"} and set(written["rows"]) == {"first", "second", "third"}


def test_bootstrap_intervals_are_tight_when_every_image_agrees_and_wide_when_they_do_not(tmp_path, capsys) -> None:
    from benchmarks import intervals

    noise = [0.01, 0.02, 0.03, 0.015, 0.025]
    agree = intervals.interval([3 * n for n in noise], noise, resamples=999)
    assert agree.ratio == pytest.approx(3) and agree.low == pytest.approx(3) and agree.high == pytest.approx(3)
    assert agree.share_at_bar == 1.0 and agree.images == 5
    spread = intervals.interval([0.5 * noise[0], 4 * noise[1], 1 * noise[2], 6 * noise[3], 0.8 * noise[4]], noise, resamples=999)
    assert spread.low < 1.5 < spread.ratio < spread.high and 0 < spread.share_at_bar < 1
    tiny = intervals.interval([0.01, 0.02], [0.001, 0.001], resamples=99)
    assert tiny.ratio == pytest.approx(0.015 / intervals.MIN_MEAN_NOISE_DAMAGE) and intervals.interval_text(tiny).startswith("n/m")
    with pytest.raises(ValueError):
        intervals.interval([0.1, 0.2], [0.1], resamples=99)

    results = tmp_path / "results.json"
    names = ["cartoon/a", "cartoon/b", "face/c", "face/d"]
    per_image = {"damage": [0.03, 0.01, 0.04, 0.05], "noise_damage": [0.01, 0.01, 0.01, 0.02]}
    results.write_text(json.dumps({"images": names, "rows": {}, "per_image": {"generator η 8 (default)": per_image, "noise": per_image}}))
    assert intervals.main([str(results), "--rows", "generator", "--resamples", "99"]) == 0
    printed = capsys.readouterr().out
    assert "| generator η 8 (default) | 2.60 [" in printed and "| noise |" not in printed
    found = intervals.row_intervals(per_image, [n.split("/")[0] for n in names], resamples=99)
    assert found["cartoon"].ratio == pytest.approx(2.0) and found["face"].ratio == pytest.approx(3.0) and found["all"].images == 4
    assert intervals.first_per_domain(["cartoon", "cartoon", "face", "face", "face"], 1) == [0, 2]
    assert intervals.main([str(results), "--rows", "generator", "--resamples", "99", "--per-domain", "2"]) == 0
    assert "4 images (cartoon 2, face 2)" in capsys.readouterr().out
    results.write_text(json.dumps({"images": names, "rows": {}}))
    with pytest.raises(SystemExit):
        intervals.main([str(results)])
    assert "no per-image values" in capsys.readouterr().err


def test_a_paired_difference_of_two_rows_on_the_same_images_and_files_read_together(tmp_path, capsys) -> None:
    from benchmarks import intervals

    noise = [0.01, 0.02, 0.03, 0.015]
    three = {"damage": [3 * n for n in noise], "noise_damage": noise}
    two = {"damage": [2 * n for n in noise], "noise_damage": noise}
    found = intervals.difference(three, two, resamples=999)
    assert found.ratio == pytest.approx(1) and found.low == pytest.approx(1) and found.high == pytest.approx(1)
    assert found.share_at_bar == 1.0
    with pytest.raises(ValueError):
        intervals.difference(three, {"damage": [0.1], "noise_damage": [0.1]}, resamples=99)

    names = ["cartoon/a", "cartoon/b", "face/c", "face/d"]
    label = "generator η 8 (default)"
    (tmp_path / "default.json").write_text(json.dumps({"images": names, "per_image": {label: two}}))
    (tmp_path / "candidate.json").write_text(json.dumps({"images": names, "per_image": {label: three}}))
    files = [str(tmp_path / "default.json"), str(tmp_path / "candidate.json")]
    assert intervals.main([*files, "--resamples", "99", "--difference", f"candidate: {label}", label]) == 0
    printed = capsys.readouterr().out
    assert f"| candidate: {label} | 3.00 [3.00, 3.00]" in printed
    assert f"| candidate: {label} − {label} | +1.00 [+1.00, +1.00] A larger in 100%" in printed
    (tmp_path / "other.json").write_text(json.dumps({"images": names[::-1], "per_image": {label: three}}))
    for argv in ([files[0], str(tmp_path / "other.json")], [*files, "--difference", "no such row", label]):
        with pytest.raises(SystemExit):
            intervals.main(argv)
        assert "Traceback" not in capsys.readouterr().err


def test_min_energy_tunes_on_the_pool_images_a_minimum_would_act_on(tmp_path) -> None:
    """benchmarks.min_energy: a seeded draw of pool images, of which the flattest (lowest default δ) are kept,
    and rows for every minimum × ceiling × form after the default; luma PSNR tells brightness from colour."""
    from PIL import Image

    from benchmarks.min_energy import lowest_energy, luma_psnr, pool_names, variants
    from fastprotect.dummy import dummy_protector
    from fastprotect.generator import colour_only

    for domain in ("cartoon", "face"):
        (tmp_path / domain).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / domain / f"{domain}_{i}.png")
    (tmp_path / "cartoon" / "notes.txt").write_text("not an image")
    drawn = pool_names(tmp_path, 4, seed=0)
    assert len(drawn) == 4 and drawn == pool_names(tmp_path, 4, seed=0) and drawn != pool_names(tmp_path, 4, seed=1)
    assert all(name.endswith(".png") for name in drawn)

    protector = dummy_protector(with_generator=True)
    # no energy cap here, so that energy follows texture alone
    protector.generator = protector.generator.with_config(mask_floor=0.05, contrast_reference=0.06, rms_levels=255.0)
    rng = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 48, 48), 0.5)
    half = flat.clone()
    half[..., 24:] = torch.rand(1, 3, 48, 24, generator=rng)
    textured = torch.rand(1, 3, 48, 48, generator=rng)
    images = {"face/textured": textured, "cartoon/flat": flat, "object/half": half}
    assert lowest_energy(protector, images, 2, below=255) == ["cartoon/flat", "object/half"]  # flattest first
    assert lowest_energy(protector, images, 5, below=1e-9) == []  # none below a minimum of nothing

    rows = variants([2.5, 3.0], [0.5], ["blue-yellow", "colour", "both"])
    assert next(iter(rows)) == "default (no minimum)" and rows["default (no minimum)"] == {"fill_rms_levels": 0.0} and len(rows) == 7
    assert rows["minimum 3, floor ≤ 0.5, colour only"] == {"fill_rms_levels": 3.0, "fill_floor_max": 0.5, "fill_form": "colour",
                                                           "fill_block": 0}
    assert rows["minimum 2.5, floor ≤ 0.5, blue-yellow only"]["fill_form"] == "blue-yellow"
    squares = variants([2.5], [0.5], ["blue-yellow"], (0, 8))
    assert list(squares)[1:] == ["minimum 2.5, floor ≤ 0.5, blue-yellow only", "minimum 2.5, floor ≤ 0.5, blue-yellow only, in 8-px squares"]
    assert squares["minimum 2.5, floor ≤ 0.5, blue-yellow only, in 8-px squares"]["fill_block"] == 8
    change = torch.randn(1, 3, 16, 16, generator=rng) * 4 / 255
    clean = torch.full((1, 3, 16, 16), 0.5)
    assert float(luma_psnr(clean, clean + colour_only(change))) > 100  # no brightness at all
    assert float(luma_psnr(clean, clean + change)) < 50


def test_jpeg_keeps_a_colour_change_in_8_pixel_squares_on_its_own_grid_and_loses_it_off_the_grid() -> None:
    """benchmarks.jpeg_grid.shifted_jpeg: offset 0 is the plain re-encoding. A blue-difference change of 6 levels at
    pixel detail does not come through JPEG q75 at all; constant over the image's 8×8 squares, most of it does on that
    grid and less on a grid 2 px off — the reason the default lift is written in squares, and its limit."""
    from benchmarks.jpeg_grid import shifted_jpeg
    from fastprotect.evaluation import transform
    from fastprotect.generator import block_constant, blue_yellow

    clean = torch.full((1, 3, 64, 64), 0.5)
    clean[..., :, 32:] = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1)  # a grey and a red fill
    pattern = blue_yellow(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))

    def kept(block: int, offset: int) -> float:
        change = block_constant(pattern, block)
        protected = ((clean + change / change.abs().max() * 6 / 255).clamp(0, 1) * 255).round() / 255
        if offset == 0:
            assert torch.equal(shifted_jpeg(protected, 75, 0), transform(protected, "jpeg75", torch.Generator()))
        left = shifted_jpeg(protected, 75, offset) - shifted_jpeg(clean, 75, offset)
        assert left.shape == protected.shape
        return float(torch.nn.functional.cosine_similarity(left.flatten(), (protected - clean).flatten(), dim=0))

    assert kept(0, 0) < 0.1
    assert kept(8, 0) > 0.5
    assert kept(8, 2) < kept(8, 0) - 0.15


def test_jpeg_grid_looks_only_at_images_the_minimum_energy_lifts() -> None:
    from benchmarks.jpeg_grid import lifted_names
    from fastprotect.dummy import dummy_protector

    protector = dummy_protector(with_generator=True)
    protector.generator = protector.generator.with_config(mask_floor=0.05, contrast_reference=0.06, fill_rms_levels=2.5)
    flat = torch.full((1, 3, 48, 48), 0.5)
    textured = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    assert lifted_names(protector, {"cartoon/flat": flat, "face/textured": textured}) == ["cartoon/flat"]


@pytest.mark.parametrize("module", ["jpeg_grid", "min_energy"])
def test_the_lift_benchmarks_refuse_a_mixture_checkpoint_with_a_usage_error(module, capsys) -> None:
    import importlib

    from fastprotect.bundle import bundled_checkpoint

    mixture = bundled_checkpoint("taef2-mixture")
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(f"benchmarks.{module}").main(["--generator", str(mixture)])
    assert stopped.value.code == 2 and f"{mixture} is not a generator checkpoint" in capsys.readouterr().err


def test_the_steepest_direction_pulls_more_than_noise_of_the_same_energy() -> None:
    """benchmarks.sensitivity: −∇ of the protection loss, scaled to a given energy, lowers the loss more than random
    noise of that energy (first order), and every row is held to exactly the energy it is given, image by image."""
    from benchmarks.sensitivity import at_energy, directions, rms, steepest_direction
    from fastprotect.dummy import dummy_protector
    from fastprotect.losses import encode_target, protection_loss

    protector = dummy_protector()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    target = encode_target(protector.encoder, protector.target_images[:1], 32, 32)
    steepest = steepest_direction(protector.encoder, images, target)
    energy = torch.tensor([1.0, 2.0]) / 255
    noise = at_energy(torch.randn(images.shape, generator=torch.Generator().manual_seed(1)), energy)
    step = at_energy(steepest, energy)
    assert torch.allclose(rms(step), energy) and torch.allclose(rms(noise), energy)
    with torch.no_grad():
        before, pulled, jostled = (protection_loss(protector.encoder(x), target) for x in (images, images + step, images + noise))
    assert bool(((before - pulled) > (before - jostled).abs()).all())
    budget = torch.zeros(2, 1, 32, 32)
    budget[..., 16:] = 1.0
    for label, direction in directions(steepest, budget).items():
        assert direction.shape == images.shape
        if "m" in label.split("⊙")[-1]:
            assert bool((direction[..., :16] == 0).all())  # nothing outside the budget


def test_pgd_in_the_generators_budget_without_the_cap_keeps_its_box_and_its_energy() -> None:
    """noise_control's "pgd-budget" rows: PGD in the box ±η·m of the generator's texture budget, its energy not capped
    afterwards (the capped row scales PGD's δ down to the generator's RMS)."""
    from benchmarks.noise_control import per_image_pgd
    from fastprotect.dummy import dummy_protector
    from fastprotect.vocabulary import eta_from_levels

    protector = dummy_protector(with_generator=True)
    image = torch.full((1, 3, 32, 32), 0.5)
    image[..., 16:] = torch.rand(1, 3, 32, 16, generator=torch.Generator().manual_seed(0))
    image = (image * 255).round() / 255
    eta, rules = eta_from_levels(16), protector.generator.with_config(rms_levels=1.0)  # a cap PGD's δ reaches
    capped, _ = per_image_pgd(protector, image, eta, budget=rules, steps=2)
    free, _ = per_image_pgd(protector, image, eta, budget=rules, cap=False, steps=2)
    bound = eta * rules.budget(image) + 0.5 / 255 + 1e-6  # rounding to 8 bits moves a pixel half a level
    assert bool(((free - image).abs() <= bound).all()) and bool(((capped - image).abs() <= bound).all())
    assert (free - image).pow(2).mean() > (capped - image).pow(2).mean()


def test_the_crops_figure_puts_per_image_pgd_beside_the_default_when_asked(tmp_path, capsys) -> None:
    """scripts.make_crops_figure --pgd N: the third column is per-image PGD at η N (a change the size of its budget),
    not the mixture; the figure is written with its five columns."""
    from PIL import Image

    from scripts.make_crops_figure import main

    folder = tmp_path / "images"
    folder.mkdir()
    pixels = (torch.rand(96, 96, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()
    Image.fromarray(pixels).save(folder / "noise.png")
    out = tmp_path / "crops.png"
    assert main(["--images", str(folder), "--pick", "noise.png:centre", "--crop", "64", "--max-side", "96",
                 "--pgd", "2", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PGD eta 2 PSNR" in printed and "mixture" not in printed
    pgd_psnr = float(printed.split("PGD eta 2 PSNR ")[1].split(" dB")[0])
    assert 40.0 < pgd_psnr < 60.0  # ±2 levels at most: changed, within its budget
    assert Image.open(out).width == 5 * (64 * 2 + 6) + 6


def test_the_floors_report_names_each_floor_and_what_was_measured():
    from benchmarks import floors

    results = {"machine": "test CPU", "load_before": [0.1], "load_after": [0.2],
               "network": {"matmul_gflops": 100.0, "rows": [{"upload": "1024²", "network_size": [512, 512], "gmac": 19.5,
                                                             "floor_s": 0.39, "measured_s": 0.61}]},
               "verdict": {"round_trip_s": 0.65, "verdict_with_reference_s": 1.68},
               "startup": {"import_gradio_s": 3.8, "import_torch_s": 1.9, "minimal_page_s": 4.5}}
    text = floors.markdown(results)
    assert "matrix product: 100 GFLOP/s" in text
    assert "| 1024² | 512×512 | 19.50 G | 0.390 s | 0.610 s |" in text
    assert "| round trip | 0.650 |" in text and "| verdict with reference | 1.680 |" in text
    assert "| a minimal Gradio page answering HTTP 200, from its process's start | 4.50 |" in text
