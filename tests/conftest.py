"""Shared fixtures. Tests run offline (HF_HUB_OFFLINE=1) on CPU on dummy models (``fastprotect.dummy``).

Real weights and images live in ``../shared`` beside the project root on this team's machines;
tests that need them use the fixtures below, which skip with a reason when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fastprotect import environment  # after HF_HUB_OFFLINE: nothing may import huggingface_hub first

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(environment.get("FASTPROTECT_SHARED") or PROJECT_ROOT.parent / "shared")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (real weights/images shared with the team); not present on this machine")
    return path


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """``../shared/weights``: real LPIPS backbones and TAEF2 (skips when absent)."""
    return _require(SHARED / "weights")


@pytest.fixture(scope="session")
def shared_images() -> Path:
    """``../shared/data/images``: real images in four domains (skips when absent)."""
    return _require(SHARED / "data" / "images")


@pytest.fixture(scope="session")
def lpips_examples() -> Path:
    """``../shared/data/lpips``: the LPIPS project's three reference images (skips when absent)."""
    return _require(SHARED / "data" / "lpips")


@pytest.fixture
def one_torch_thread():
    """Run the test on one torch thread: small models are faster so, and much faster on a busy machine."""
    from attack.pipeline import one_thread

    with one_thread():
        yield
