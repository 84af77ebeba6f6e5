"""On a CUDA device: the whole protection pipeline, the mimic's round trip and a few LoRA steps.

Marked ``gpu`` (skipped by default; run with ``python -m pytest -m gpu tests/test_gpu.py``). Uses the
bundled checkpoint, whose encoder and LPIPS backbone travel with it, so no network is needed.
"""

from __future__ import annotations

import pytest
import torch

from fastprotect.protect import Protector

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module", params=[torch.float32, torch.float16], ids=["fp32", "fp16"])
def protector(request) -> Protector:
    return Protector.from_pretrained(device="cuda", dtype=request.param)


def _image(height: int = 200, width: int = 312) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(1, 3, height, width, generator=generator) * 255).round() / 255


def test_protect_runs_on_cuda_with_automatic_target(protector):
    x = _image()
    result = protector.protect(x.cuda(), target="auto", refine_steps=2)
    assert result.image.device.type == "cuda"
    assert result.info.mode == "pretrained"
    assert (result.image - x.cuda()).abs().max().item() <= 8 / 255 + 1e-6
    assert result.info.lpips is not None


def test_cuda_and_cpu_pick_the_same_group_and_target():
    x = _image()
    on_cpu = Protector.from_pretrained().protect(x, compute_metrics=False).info
    on_gpu = Protector.from_pretrained(device="cuda").protect(x.cuda(), compute_metrics=False).info
    assert (on_cpu.target, on_cpu.group) == (on_gpu.target, on_gpu.group)


def test_round_trip_on_cuda(protector):
    x = _image().cuda()
    seen = protector.autoencoder.round_trip(x)
    assert seen.shape == x.shape and seen.device.type == "cuda"
