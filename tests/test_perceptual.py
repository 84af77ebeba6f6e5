"""LPIPS wrapper: published values with the real backbones from ../shared/weights, agreement with
the lpips package, spatial map, gradients, strict backbone loading and the offline failure."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from fastprotect.hub import WeightsUnavailableError
from fastprotect.perceptual import BACKBONE_ENV_VAR, BACKBONE_FILENAMES, PerceptualDistance, load_perceptual


def read_png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def examples(lpips_examples: Path) -> dict[str, torch.Tensor]:
    """The LPIPS project's ex_ref / ex_p0 / ex_p1 (1×3×64×64 in [0, 1])."""
    return {name: read_png(lpips_examples / f"ex_{name}.png") for name in ("ref", "p0", "p1")}


@pytest.fixture(scope="module")
def alex(shared_weights: Path) -> PerceptualDistance:
    return load_perceptual("alex", shared_weights / BACKBONE_FILENAMES["alex"])


# Published with the official LPIPS code (VGG) / measured with the shared AlexNet file (README).
@pytest.mark.parametrize(("net", "d_p0", "d_p1"), [("vgg", 0.569, 0.422), ("alex", 0.722, 0.138)])
def test_known_values(shared_weights: Path, examples: dict[str, torch.Tensor], net: str, d_p0: float, d_p1: float) -> None:
    distance = load_perceptual(net, shared_weights / BACKBONE_FILENAMES[net])
    with torch.no_grad():
        both = distance(examples["ref"].repeat(2, 1, 1, 1), torch.cat([examples["p0"], examples["p1"]]))
    assert both.shape == (2,)
    assert both.tolist() == pytest.approx([d_p0, d_p1], abs=0.002)


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips -> torchvision
def test_matches_lpips_package_scalar_and_spatial(alex: PerceptualDistance) -> None:
    import lpips

    x, y = torch.rand(2, 3, 48, 72), torch.rand(2, 3, 48, 72)
    reference = lpips.LPIPS(net="alex", pnet_rand=True, spatial=True, verbose=False)
    reference.load_state_dict(alex.model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(alex.spatial_map(x, y), reference(x, y, normalize=True))
        reference.spatial = False
        torch.testing.assert_close(alex(x, y), reference(x, y, normalize=True).flatten())


def test_spatial_map_shape_and_mean(alex: PerceptualDistance, examples: dict[str, torch.Tensor]) -> None:
    ref = torch.nn.functional.interpolate(examples["ref"], size=(50, 70), mode="bilinear")
    p0 = torch.nn.functional.interpolate(examples["p0"], size=(50, 70), mode="bilinear")
    with torch.no_grad():
        spatial, scalar = alex.spatial_map(ref, p0), alex(ref, p0)
    assert spatial.shape == (1, 1, 50, 70)
    assert (spatial >= 0).all()
    assert spatial.mean().item() == pytest.approx(scalar.item(), rel=0.02)


def test_frozen_and_differentiable_wrt_inputs(alex: PerceptualDistance) -> None:
    x = torch.rand(1, 3, 40, 40, requires_grad=True)
    y = torch.rand(1, 3, 40, 40, requires_grad=True)
    (alex(x, y).sum() + alex.spatial_map(x, y).mean()).backward()
    assert x.grad is not None and y.grad is not None and x.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()
    assert all(not p.requires_grad and p.grad is None for p in alex.parameters())
    torch.nn.Sequential(alex).train()  # a parent in train mode must not turn the heads' dropout on
    assert not any(m.training for m in alex.modules())


def test_backbone_file_missing_a_layer_is_rejected(shared_weights: Path, tmp_path: Path) -> None:
    state = load_file(str(shared_weights / BACKBONE_FILENAMES["alex"]))
    incomplete = tmp_path / "alex_incomplete.safetensors"
    save_file({k: v for k, v in state.items() if k != "features.3.weight"}, incomplete)
    with pytest.raises(ValueError, match=r"Missing: \['features\.3\.weight'\]"):
        load_perceptual("alex", incomplete)
    with pytest.raises(ValueError, match=r"Unexpected: \['features\.12\.bias'"):  # a VGG file is no AlexNet
        load_perceptual("alex", shared_weights / BACKBONE_FILENAMES["vgg"])


def test_torchvision_checkpoint_without_heads_and_env_folder(
    shared_weights: Path, tmp_path: Path, examples: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain torchvision checkpoint (classifier kept, no LPIPS heads) loads with the wheel's heads;
    ``$FASTPROTECT_LPIPS_BACKBONE`` may name a folder holding the standard file names."""
    state = load_file(str(shared_weights / BACKBONE_FILENAMES["alex"]))
    plain = {k: v for k, v in state.items() if k.startswith("features.")} | {"classifier.1.weight": torch.zeros(2, 2)}
    torch.save(plain, tmp_path / "alexnet.pth")
    monkeypatch.setenv(BACKBONE_ENV_VAR, str(shared_weights))
    with torch.no_grad():
        from_plain = load_perceptual("alex", tmp_path / "alexnet.pth")(examples["ref"], examples["p1"])
        from_env = load_perceptual("alex")(examples["ref"], examples["p1"])
    assert from_plain.item() == pytest.approx(0.138, abs=0.002)
    torch.testing.assert_close(from_plain, from_env)  # the heads in the file equal the wheel's


def test_offline_without_backbone_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKBONE_ENV_VAR, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty torch hub cache
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match=BACKBONE_ENV_VAR):
        load_perceptual("vgg")
    assert time.perf_counter() - start < 5
    with pytest.raises(WeightsUnavailableError):
        load_perceptual("alex", tmp_path / "no-such-file.safetensors")
