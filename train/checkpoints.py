"""Run checkpoints: ``RUN/checkpoints/step-000050/`` = a loadable mixture folder (config.json,
model.safetensors, fp32) + ``trainer_state.pt`` (optimiser, step, routing, sampler state)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

STATE_NAME = "trainer_state.pt"
_STEP = re.compile(r"^step-(\d+)$")


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    folder = run / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name)) and (p / STATE_NAME).is_file()]
    return sorted(found)


def find_checkpoint(run: Path, which: str | Path) -> Path:
    """``'latest'`` -> the newest complete checkpoint of ``run``; a path -> that folder (checked)."""
    if str(which) == "latest":
        found = list_checkpoints(run)
        if not found:
            raise FileNotFoundError(f"--resume latest: no checkpoint under {run / 'checkpoints'} (nothing to resume)")
        return found[-1][1]
    path = Path(which)
    if not (path / STATE_NAME).is_file():
        raise FileNotFoundError(f"--resume {path}: not a training checkpoint (no {STATE_NAME})")
    return path


def save_state(folder: Path, state: dict) -> None:
    tmp = folder / (STATE_NAME + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / STATE_NAME)  # written last and atomically: its presence marks the checkpoint complete


def load_state(folder: Path) -> dict:
    return torch.load(folder / STATE_NAME, map_location="cpu", weights_only=True)


def prune(run: Path, keep_states: int = 1) -> None:
    """Keep every model snapshot (for equal-step comparisons) but only the newest optimiser states."""
    found = list_checkpoints(run)
    for _, folder in found[:-keep_states]:
        state = folder / STATE_NAME
        state.unlink()  # the snapshot stays loadable as a mixture, just not resumable
