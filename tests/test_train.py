"""train/: argument checks (before any model loads), a tiny end-to-end run, resume, the split,
and the evaluation on tiny models. Tiny random encoders, 32 px images generated into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastprotect.mixture import MixtureOfPerturbations
from fastprotect.protect import Protector
from tests.tiny_models import tiny_autoencoder, tiny_vae
from train import cli, data, trainer
from train.checkpoints import list_checkpoints


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
    return ["--data", str(image_root), "--output", str(output), "--encoder-kind", "sd-vae", "--encoder-source", "tiny",
            "--publish-encoder-source", "tiny", "--size", "32", "--assign-size", "32", "--num-groups", "2",
            "--batch-size", "2", "--steps", "3", "--save-every", "2", "--heldout-fraction", "0.3", "--kmeans-init", "1",
            "--no-progress", *extra]


@pytest.fixture
def tiny_loader(monkeypatch):
    calls = []

    def load(kind, source, subfolder, device):
        calls.append((kind, source))
        return tiny_autoencoder()

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


def test_three_step_run_writes_a_checkpoint_the_protector_loads(image_root: Path, tmp_path: Path, tiny_loader) -> None:
    assert cli.main(base_args(image_root, tmp_path / "run")) == 0
    final = tmp_path / "run" / "final"
    assert {p.name for p in final.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    assert json.loads((tmp_path / "run" / "split.json").read_text())["grouping"] == "SOURCES.md group column"
    mixture = MixtureOfPerturbations.from_pretrained(final)  # strict load
    half = mixture.config.eta / 2
    assert mixture.global_perturbations.abs().max() <= half + 1e-3 and mixture.group_perturbations.abs().max() > 0
    assert mixture.config.encoder_source == "tiny" and mixture.config.num_groups == 2
    protector = Protector(tiny_autoencoder(), mixture=mixture, map_size=32)
    image = torch.rand(1, 3, 40, 48).mul(255).round().div(255)
    result = protector.protect(image, adaptive_strength=False, compute_metrics=False)
    assert result.image.shape == image.shape and result.info.linf_levels <= 8 and result.info.linf_levels > 0
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


def test_resume_latest_continues_the_step_counter(image_root: Path, tmp_path: Path, tiny_loader) -> None:
    run = tmp_path / "run"
    assert cli.main(base_args(image_root, run, "--steps", "4", "--stop-at", "2")) == 0
    assert [s for s, _ in list_checkpoints(run)] == [2]
    assert cli.main(base_args(image_root, run, "--steps", "4", "--resume", "latest")) == 0
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert [s for s, _ in list_checkpoints(run)] == [4]  # older optimiser states pruned, snapshots kept
    assert (run / "checkpoints" / "step-000002" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num-groups", "0"], "--num-groups"),
        (["--no-assignment", "--num-groups", "1"], "--no-assignment"),
        (["--resume", "latest"], "nothing to resume"),
        (["--push-to-hub", "someone/fastprotect-test"], "HF_HUB_OFFLINE"),
        (["--size", "30"], "multiple of 8"),
        (["--precision", "bf16"], "CUDA"),
        (["--stop-at", "9"], "--stop-at"),
    ],
)
def test_bad_arguments_fail_before_any_model_loads(image_root, tmp_path, tiny_loader, monkeypatch, capsys, extra, message) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(base_args(image_root, tmp_path / "run", *extra))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert tiny_loader == []  # the encoder was never loaded
    assert not (tmp_path / "run").exists()


def test_sd_vae_path_end_to_end_with_the_real_loader(image_root: Path, tmp_path: Path) -> None:
    vae_dir = tmp_path / "tiny-vae"
    tiny_vae().save_pretrained(vae_dir)
    run = tmp_path / "run"
    args = base_args(image_root, run, "--no-assignment", "--feature-weight", "0.5", "--layers", "0,2", "--descriptor", "layout-4x4")
    args[args.index("--encoder-source") + 1] = str(vae_dir)
    args.remove("--publish-encoder-source"), args.remove("tiny")
    assert cli.main(args) == 0
    mixture = MixtureOfPerturbations.from_pretrained(run / "final")
    # a local source is not written into the shipped config: the kind's Hub id is
    assert mixture.config.encoder_source == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert mixture.config.feature_weight == 0.5 and mixture.global_perturbations.dtype == torch.float32
    assert mixture.config.descriptor == "layout-4x4" and mixture.centroids.shape[1] == 16 * mixture.config.latent_channels
    protector = Protector(tiny_autoencoder(), mixture=mixture, map_size=32)
    assert protector.protect(torch.rand(1, 3, 32, 32), adaptive_strength=False, compute_metrics=False).info.group in (0, 1)
    info = json.loads((run / "train_info.json").read_text())
    assert info["steps"] == 3 and info["args"]["no_assignment"] is True
    card = (run / "final" / "README.md").read_text()
    assert "proxy" not in card and "posterior mean" in card
    assert "stored as fp16" in card and "4×4 grid means" in card and "per group, by domain" in card


def test_evaluation_runs_on_tiny_models(image_root, tmp_path, tiny_loader, shared_weights, monkeypatch) -> None:
    from train import evaluate

    run = tmp_path / "run"
    assert cli.main(base_args(image_root, run)) == 0
    monkeypatch.setattr("fastprotect.encoders.load_autoencoder", lambda *a, **k: tiny_autoencoder())
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
    assert set(results["robustness"]["UAP"]) == set(evaluate.TRANSFORMS)
    assert results["comparisons"][0]["domains"] == 2 and len(results["curves"]["UAP"]) == 2
    assert [c["b"] for c in results["equal_lpips_by_domain"]] == ["UAP", "UAP"]
    assert "| PGD 2 steps |" in (run / "final" / "README.md").read_text()  # the card got the table
    with pytest.raises(SystemExit):  # a mistyped split is a one-line usage error, not a traceback
        evaluate.parse_args(["--checkpoint", str(run / "final"), "--data", str(image_root), "--split", "missing.json", "--out", str(out)])


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


def test_headroom_runs_on_tiny_models(image_root, tmp_path, tiny_loader, monkeypatch, capsys) -> None:
    from train import headroom

    run = tmp_path / "run"
    assert cli.main(base_args(image_root, run)) == 0
    monkeypatch.setattr("fastprotect.encoders.load_autoencoder", lambda *a, **k: tiny_autoencoder())
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


def test_per_domain_comparison_is_made_at_equal_lpips_not_equal_eta() -> None:
    from train.evaluate import equal_lpips_by_domain

    def point(eta, face, paint):
        return {"eta_levels": eta, "by_domain": {"face": dict(zip(("lpips", "damage"), face)), "painting": dict(zip(("lpips", "damage"), paint))}}

    # A is less visible at η = 8 than B; on faces it is more damaging than B *at A's LPIPS*, though
    # less damaging than B at η = 8; on paintings its LPIPS lies outside B's curve
    curves = {
        "full": [point(4, (0.05, 0.05), (0.01, 0.01)), point(8, (0.10, 0.09), (0.02, 0.02))],
        "UAP": [point(4, (0.06, 0.04), (0.05, 0.05)), point(8, (0.14, 0.12), (0.10, 0.10))],
    }
    result = equal_lpips_by_domain(curves, "full", "UAP", 8)
    face = result["per_domain"]["face"]
    assert face["lpips"] == 0.10 and face["damage"][1] == pytest.approx(0.08) and face["win"] is True
    assert result["per_domain"]["painting"]["win"] is None and result["domains_won"] == 1
