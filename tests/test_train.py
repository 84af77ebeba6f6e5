"""train/: the typed TrainConfig and its checks (before any model loads, the same for the command
line and library callers), a small end-to-end run, resume, snapshots with model cards, the split,
and the evaluation on dummy models (fastprotect.dummy), 32 px images generated into tmp_path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastprotect.dummy import dummy_autoencoder, dummy_sd_vae
from fastprotect.mixture import MixtureOfPerturbations
from fastprotect.protect import Protector
from fastprotect.vocabulary import DEFAULT_ETA
from train import cli, data, trainer
from train.checkpoints import list_checkpoints
from train.config import TrainConfig, TrainConfigError


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """Two domains of small images of odd sizes, with a SOURCES.md that groups some of them."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    rows = ["| file | source | group | note |", "|---|---|---|---|"]
    for domain in ("object", "painting"):
        (root / domain).mkdir(parents=True)
        for i in range(6):
            name = f"{domain}_{i:03d}.png"
            size = (40 + 4 * i, 36)
            pixels = rng.integers(0, 256, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR).save(root / domain / name)
            rows.append(f"| {name} | test | {domain}:subject{i // 2} | |")
    (root / "SOURCES.md").write_text("# test\n\n" + "\n".join(rows) + "\n")
    return root


def base_args(image_root: Path, output: Path, *extra: str) -> list[str]:
    return ["--data", str(image_root), "--output", str(output), "--encoder-kind", "sd-vae", "--encoder-source", "dummy",
            "--publish-encoder-source", "dummy", "--size", "32", "--assign-size", "32", "--num-groups", "2",
            "--batch-size", "2", "--steps", "3", "--save-every", "2", "--heldout-fraction", "0.3", "--kmeans-init", "1",
            "--no-progress", *extra]


@pytest.fixture
def dummy_loader(monkeypatch):
    calls = []

    def load(kind, source, subfolder, device):
        calls.append((kind, source))
        return dummy_autoencoder()

    monkeypatch.setattr(trainer, "load_encoder", load)
    return calls


def test_grouped_split_is_deterministic_and_keeps_groups_together(image_root: Path) -> None:
    entries, grouping = data.scan([image_root])
    assert grouping == "SOURCES.md group column" and len(entries) == 12
    first = data.split(entries, heldout_fraction=0.3, seed=0)
    assert first == data.split(entries, heldout_fraction=0.3, seed=0)
    train_groups, held_groups = {e.group for e in first[0]}, {e.group for e in first[1]}
    assert held_groups and not train_groups & held_groups
    assert {e.domain for e in first[1]} == {"object", "painting"}  # every domain is held out in part


def test_three_step_run_writes_a_checkpoint_the_protector_loads(image_root: Path, tmp_path: Path, dummy_loader) -> None:
    assert cli.main(base_args(image_root, tmp_path / "run")) == 0
    final = tmp_path / "run" / "final"
    assert {p.name for p in final.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    assert json.loads((tmp_path / "run" / "split.json").read_text())["grouping"] == "SOURCES.md group column"
    mixture = MixtureOfPerturbations.from_pretrained(final)  # strict load
    half = mixture.config.eta / 2
    assert mixture.global_perturbations.abs().max() <= half + 1e-3 and mixture.group_perturbations.abs().max() > 0
    assert mixture.config.encoder_source == "dummy" and mixture.config.num_groups == 2
    assert mixture.config.mimic_base == "sd-1.5"  # set from the encoder kind (MIMIC_FAMILY_OF_ENCODER)
    protector = Protector(dummy_autoencoder(), mixture=mixture, map_size=32)
    image = torch.rand(1, 3, 40, 48).mul(255).round().div(255)
    result = protector.protect(image, adaptive_strength=False, compute_metrics=False)
    assert result.image.shape == image.shape and result.info.linf_levels <= 8 and result.info.linf_levels > 0
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


def test_resume_latest_continues_the_step_counter(image_root: Path, tmp_path: Path, dummy_loader) -> None:
    run = tmp_path / "run"
    assert cli.main(base_args(image_root, run, "--steps", "4", "--stop-at", "2")) == 0
    assert [s for s, _ in list_checkpoints(run)] == [2]
    assert cli.main(base_args(image_root, run, "--steps", "4", "--resume", "latest")) == 0
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert [s for s, _ in list_checkpoints(run)] == [4]  # older optimiser states pruned, snapshots kept
    assert (run / "checkpoints" / "step-000002" / "model.safetensors").is_file()


def test_every_snapshot_has_a_real_model_card(image_root: Path, tmp_path: Path, dummy_loader) -> None:
    run = tmp_path / "run"
    assert cli.main(base_args(image_root, run)) == 0  # 3 steps, a snapshot every 2: steps 2 and 3
    snapshot = (run / "checkpoints" / "step-000002" / "README.md").read_text()
    final = (run / "final" / "README.md").read_text()
    for card in (snapshot, final):
        assert "More Information Needed" not in card
        assert "`sd-vae` encoder" in card and "mimic_base: sd-1.5" in card and "8/255" in card and "K = 2" in card
        assert "low, mid, high" in card and "Protector.from_pretrained" in card and "licence | MIT" in card
        assert "## Evaluation" not in card  # no table until train.evaluate writes one
    assert "| training | 2 of 3 steps (a snapshot taken during training), batch 2 |" in snapshot and "stored as fp32" in snapshot
    assert "| training | 3 steps, batch 2 |" in final and "stored as fp16" in final


def test_the_command_line_defaults_are_train_configs(image_root: Path, tmp_path: Path) -> None:
    parsed = cli.parse_args(["--data", str(image_root), "--output", str(tmp_path / "run")])
    assert parsed == TrainConfig(data=(image_root,), output=tmp_path / "run")
    assert parsed.eta == DEFAULT_ETA and parsed.learning_rate == pytest.approx(DEFAULT_ETA / 10)
    flags = cli.parse_args(base_args(image_root, tmp_path / "run", "--eta", "4", "--layers", "0,2", "--fixed-target", "mid"))
    assert flags.eta == 4 / 255 and flags.layers == (0, 2) and flags.fixed_target == "mid" and flags.progress is False


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_groups": 0}, "num_groups must be at least 1"),
        ({"eta": 40 / 255}, "between 1 and 32 levels"),
        ({"encoder_kind": "vqgan"}, "encoder_kind must be one of sd-vae, taesd, taef2"),
        ({"fixed_target": "medium"}, "fixed_target must be one of low, mid, high"),
        ({"steps": 10, "stop_at": 11}, "stop_at must be between 1 and steps (10)"),
        ({"precision": "fp16", "device": "cpu"}, "CUDA"),
    ],
)
def test_library_callers_get_the_same_rules(tmp_path: Path, options, message) -> None:
    with pytest.raises(TrainConfigError, match=re.escape(message)):
        TrainConfig(data=(tmp_path,), output=tmp_path / "run", **options)


def test_train_is_callable_with_a_typed_config(image_root: Path, tmp_path: Path, dummy_loader) -> None:
    config = TrainConfig(
        data=[image_root], output=tmp_path / "run", encoder_kind="taesd", encoder_source="dummy", publish_encoder_source="dummy",
        size=32, assign_size=32, num_groups=2, steps=2, save_every=1, batch_size=2, heldout_fraction=0.3, kmeans_init=1,
        progress=False,
    )
    assert config.data == (image_root,)  # lists and strings are normalised
    final = trainer.train(config)
    mixture = MixtureOfPerturbations.from_pretrained(final)
    assert mixture.config.encoder_kind == "taesd" and mixture.config.mimic_base == "sd-1.5"
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]
    with pytest.raises(TrainConfigError, match="nothing to resume"):  # preflight runs inside train() too
        trainer.train(TrainConfig(data=(image_root,), output=tmp_path / "elsewhere", resume="latest"))
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num-groups", "0"], "num_groups must be at least 1"),
        (["--no-assignment", "--num-groups", "1"], "no_assignment needs num_groups > 1"),
        (["--resume", "latest"], "nothing to resume"),
        (["--resume", "latest", "--split", "x.json"], "do not pass split"),
        (["--push-to-hub", "someone/fastprotect-test"], "HF_HUB_OFFLINE"),
        (["--size", "30"], "multiple of 8"),
        (["--precision", "bf16"], "CUDA"),
        (["--stop-at", "9"], "stop_at must be between 1 and steps (3)"),
        (["--eta", "40"], "between 1 and 32 levels"),
        (["--eta", "0.5"], "between 1 and 32 levels"),
        (["--layers", "0,a"], "--layers is a comma-separated list"),
        (["--max-train-images", "1"], "max_train_images must be at least num_groups"),
        (["--data", "/nonexistent/images"], "not a folder"),
    ],
)
def test_bad_arguments_fail_before_any_model_loads(image_root, tmp_path, dummy_loader, monkeypatch, capsys, extra, message) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(base_args(image_root, tmp_path / "run", *extra))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1  # one line, no usage block
    assert dummy_loader == []  # the encoder was never loaded
    assert not (tmp_path / "run").exists()


def test_sd_vae_path_end_to_end_with_the_real_loader(image_root: Path, tmp_path: Path) -> None:
    vae_dir = tmp_path / "dummy-vae"
    dummy_sd_vae().save_pretrained(vae_dir)
    run = tmp_path / "run"
    args = base_args(image_root, run, "--no-assignment", "--feature-weight", "0.5", "--layers", "0,2", "--descriptor", "layout-4x4")
    args[args.index("--encoder-source") + 1] = str(vae_dir)
    args.remove("--publish-encoder-source"), args.remove("dummy")
    assert cli.main(args) == 0
    mixture = MixtureOfPerturbations.from_pretrained(run / "final")
    # a local source is not written into the shipped config: the kind's Hub id is
    assert mixture.config.encoder_source == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert mixture.config.feature_weight == 0.5 and mixture.global_perturbations.dtype == torch.float32
    assert mixture.config.descriptor == "layout-4x4" and mixture.centroids.shape[1] == 16 * mixture.config.latent_channels
    protector = Protector(dummy_autoencoder(), mixture=mixture, map_size=32)
    assert protector.protect(torch.rand(1, 3, 32, 32), adaptive_strength=False, compute_metrics=False).info.group in (0, 1)
    info = json.loads((run / "train_info.json").read_text())
    assert info["steps"] == 3 and info["config"]["no_assignment"] is True and info["config"]["layers"] == [0, 2]
    card = (run / "final" / "README.md").read_text()
    assert "proxy" not in card and "posterior mean" in card
    assert "stored as fp16" in card and "4×4 grid means" in card and "per group, by domain" in card


def test_evaluation_runs_on_dummy_models(image_root, tmp_path, dummy_loader, shared_weights, monkeypatch) -> None:
    from fastprotect.evaluation import TRANSFORMS
    from train import evaluate

    run = tmp_path / "run"
    assert cli.main(base_args(image_root, run)) == 0
    monkeypatch.setattr("fastprotect.encoders.load_autoencoder", lambda *a, **k: dummy_autoencoder())
    out = tmp_path / "eval.json"
    code = evaluate.main([
        "--checkpoint", str(run / "final"), "--row", f"UAP={run / 'final'}", "--data", str(image_root),
        "--split", str(run / "split.json"), "--out", str(out), "--size", "32", "--per-domain", "1",
        "--pgd-steps", "1,2", "--pgd-report", "1,2",
        "--lpips-backbone", str(shared_weights / "alexnet_lpips_features.safetensors"),
        "--compare", "full (final),UAP", "--card", str(run / "final" / "README.md"), "--curve-etas", "4,8",
    ])
    assert code == 0
    results = json.loads(out.read_text())
    assert {"UAP", "full (final)", "full (final) + adaptive strength", "PGD 1 steps", "PGD 2 steps"} <= set(results["rows"])
    assert set(results["robustness"]["UAP"]) == set(TRANSFORMS)
    assert results["comparisons"][0]["domains"] == 2 and len(results["curves"]["UAP"]) == 2
    assert [c["b"] for c in results["equal_lpips_by_domain"]] == ["UAP", "UAP"]
    assert "| PGD 2 steps |" in (run / "final" / "README.md").read_text()  # the card got the table
    with pytest.raises(SystemExit):  # a mistyped split is a one-line usage error, not a traceback
        evaluate.parse_args(["--checkpoint", str(run / "final"), "--data", str(image_root), "--split", "missing.json", "--out", str(out)])
    with pytest.raises(SystemExit):  # a budget outside 1…32 levels is a usage error before any model loads
        evaluate.parse_args(["--checkpoint", str(run / "final"), "--data", str(image_root), "--split", str(run / "split.json"),
                             "--out", str(out), "--curve-etas", "4,40"])


def test_headroom_scores_a_shared_step_against_each_images_own_best_step() -> None:
    from train.headroom import captured_fraction, shared_directions

    g = torch.tensor([[1.0, -2.0, 3.0], [1.0, 1.0, 1.0]])
    assert captured_fraction(g, g).tolist() == [1.0, 1.0]  # own direction: the per-image optimum
    assert captured_fraction(g, -g).tolist() == [-1.0, -1.0]  # opposite direction: harmful
    # first row with the sign pattern (+, +, +): (1 - 2 + 3) / 6
    assert captured_fraction(g[:1], torch.ones(1, 3)).item() == pytest.approx(2 / 6)
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    sums, fallbacks = shared_directions(train, [(0, "a"), (0, "a"), 1], [(0, "a"), (1, "b")], [0, 1])
    assert sums.tolist() == [[1.0, 1.0], [5.0, 5.0]] and fallbacks == 1  # (1, "b") unseen: its target's sum


def test_headroom_runs_on_dummy_models(image_root, tmp_path, dummy_loader, monkeypatch, capsys) -> None:
    from train import headroom

    run = tmp_path / "run"
    assert cli.main(base_args(image_root, run)) == 0
    monkeypatch.setattr("fastprotect.encoders.load_autoencoder", lambda *a, **k: dummy_autoencoder())
    out, cached = tmp_path / "headroom.json", tmp_path / "grads.pt"
    args = ["--checkpoint", str(run / "final"), "--data", str(image_root), "--split", str(run / "split.json"), "--size", "32",
            "--out", str(out), "--cache", str(cached)]
    assert headroom.main(args) == 0
    results = json.loads(out.read_text())
    assert set(results["rows"]) == set(headroom.GROUPINGS) and cached.is_file()
    assert headroom.main(args) == 0 and json.loads(out.read_text())["rows"] == results["rows"]  # the cache gives the same answer
    with pytest.raises(SystemExit, match="another setting"):  # gradients of λ = 1 are not reused for λ = 0
        headroom.main([*args, "--feature-weight", "0"])
    assert results["rows"]["image"]["all"] == pytest.approx(1.0)
    for name in ("target", "K-means", "domain"):
        assert -1.0 <= results["rows"][name]["all"] <= 1.0
    assert "| K-means |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no such file"):
        headroom.main(["--checkpoint", str(run / "final"), "--data", str(image_root), "--split", str(tmp_path / "missing.json")])


# ----------------------------------------------------------------------------- the generator at upload scale
# (train.generator --frames / --input-diversity, issue 29: the product runs the network on the whole frame)


def odd_frames(tmp_path: Path, monkeypatch) -> Path:
    """Three images of different aspect ratios (one portrait, one landscape, one square) and a dummy
    encoder for the generator trainer. Returns the data root."""
    root = tmp_path / "frames" / "painting"
    root.mkdir(parents=True)
    for index, size in enumerate(((96, 64), (48, 80), (72, 72))):
        pixels = (torch.rand(size[1], size[0], 3, generator=torch.Generator().manual_seed(index)) * 255).byte().numpy()
        Image.fromarray(pixels).save(root / f"p{index}.png")
    monkeypatch.setattr("fastprotect.encoders.load_autoencoder", lambda *a, **k: dummy_autoencoder("sd-vae"))
    return tmp_path / "frames"


def test_frames_keep_their_aspect_ratio_at_the_long_side(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 120), (10, 200, 30)).save(path)
    frame = data.load_frame(path, 150)
    assert frame.dtype == torch.uint8 and tuple(frame.shape) == (3, 60, 150)
    assert frame[:, 30, 75].tolist() == [10, 200, 30]


def test_frame_crops_are_the_frames_own_pixels_with_the_frames_pattern_under_them() -> None:
    """At scale 1 a crop is a piece of the frame as uploaded, and the pattern the generator sees beside it is
    the window of the pattern drawn over the whole frame (what inference draws), flipped with the crop."""
    import train.generator as trainer
    from fastprotect.generator import GeneratorConfig, PerturbationGenerator

    frames = [(torch.rand(3, 40, 70, generator=torch.Generator().manual_seed(i)) * 255).byte() for i in range(2)]
    model = PerturbationGenerator(GeneratorConfig(width=8, blocks=1))
    crops, windows = trainer.random_frame_crops(frames, 6, 32, torch.Generator().manual_seed(3), largest_scale=1.0)
    patterns = trainer.frame_patterns(model, 32, windows)
    assert crops.shape == (6, 3, 32, 32) and patterns.shape == (6, 3, 32, 32)
    assert {w["full"] for w in windows} == {(40, 70)} and {w["flip"] for w in windows} == {True, False}
    whole = model.target(40, 70)[0]
    for crop, pattern, window in zip(crops, patterns, windows):
        top, left = window["offset"]
        flip = (lambda t: t.flip(-1)) if window["flip"] else (lambda t: t)
        found = [i for i, f in enumerate(frames) if torch.equal(flip(f[:, top : top + 32, left : left + 32]).float() / 255, crop)]
        assert found, "a crop at scale 1 must be the frame's pixels at its window's offset"
        assert torch.allclose(pattern, flip(whole[:, top : top + 32, left : left + 32]), atol=1e-6)


def test_input_diversity_resizes_and_shifts_keeping_the_size_and_the_gradient() -> None:
    import train.generator as trainer

    images = torch.rand(2, 3, 48, 40, requires_grad=True)
    assert torch.equal(trainer.apply_diversity(images, {"scale": 1.0, "shift": (0, 0)}), images)
    shifted = trainer.apply_diversity(images, {"scale": 1.0, "shift": (3, -5)})
    assert shifted.shape == images.shape
    # a pure shift: the content moves 3 px down and 5 px left, the uncovered border reflected
    assert torch.equal(shifted[..., 3:, :-5], images[..., :-3, 5:])
    for scale in (0.84, 1.19):
        out = trainer.apply_diversity(images, {"scale": scale, "shift": (-4, 4)})
        assert out.shape == images.shape and not torch.allclose(out, images)
        out.sum().backward()
        assert images.grad is not None and images.grad.abs().sum() > 0
        images.grad = None
    draws = [trainer.random_diversity(48, 40, torch.Generator().manual_seed(s)) for s in range(50)]
    assert all(1 / 1.2 - 1e-9 <= d["scale"] <= 1.2 + 1e-9 and abs(d["shift"][0]) <= 6 and abs(d["shift"][1]) <= 5 for d in draws)
    assert len({round(d["scale"], 3) for d in draws}) > 10  # it is random, not one fixed resize


def test_the_generator_trains_on_whole_frames_with_input_diversity_and_reuses_its_frame_cache(tmp_path: Path, monkeypatch, capsys) -> None:
    import train.generator as trainer

    root = odd_frames(tmp_path, monkeypatch)
    out, cache = tmp_path / "run", tmp_path / "frames.pt"
    common = ["--data", str(root), "--out", str(out), "--frames", "--load-size", "64", "--crop", "32", "--batch", "2",
              "--width", "8", "--blocks", "1", "--net-downscale", "2", "--input-diversity", "1", "--log-every", "1",
              "--cache", str(cache)]
    assert trainer.main([*common, "--steps", "2"]) == 0
    saved = torch.load(cache)
    assert saved["kind"] == "frames" and sorted(tuple(f.shape[1:]) for f in saved["frames"]) == [(43, 64), (64, 38), (64, 64)]
    assert trainer.main([*common, "--steps", "3", "--resume"]) == 0  # from the cache this time
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)
    args = json.loads((out / "train_info.json").read_text())["args"]
    assert args["frames"] is True and args["input_diversity"] == 1.0
    exported = tmp_path / "export"
    assert trainer.main(["export", "--run", str(out), "--output", str(exported)]) == 0
    assert "whole frames at long side 64 px" in (exported / "README.md").read_text()  # the card says at which scale
    # a cache of centre squares is not read as frames: one sentence, no traceback
    torch.save({"images": torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "names": ["x"]}, cache)
    with pytest.raises(SystemExit):
        trainer.main([*common, "--steps", "4", "--resume"])
    assert "does not hold frames at long side 64" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        trainer.main([*common, "--steps", "4", "--input-diversity", "1.5"])
    assert "--input-diversity must be a share between 0 and 1" in capsys.readouterr().err
