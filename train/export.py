"""Export a run's snapshot as a shippable checkpoint folder (fp16 safetensors + config + card).

``python -m train.export --run RUN [--step N] --output DIR``: for a run that was stopped before
its last step (the latest snapshot of ``RUN/checkpoints`` by default). Steps, wall time and the
data description come from ``RUN/log.jsonl`` and ``RUN/split.json``; no image or encoder is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fastprotect.mixture import MixtureOfPerturbations

from . import data
from .trainer import hardware


def export(run: Path, step: int | None, output: Path, *, dtype: str = "fp16", notes: dict | None = None, machine: str | None = None, note: str | None = None) -> Path:
    snapshots = {p.name: p for p in (run / "checkpoints").glob("step-*") if (p / "model.safetensors").is_file()}
    if not snapshots:
        raise FileNotFoundError(f"no snapshot under {run / 'checkpoints'}")
    folder = snapshots[f"step-{step:06d}"] if step is not None else snapshots[max(snapshots)]
    mixture = MixtureOfPerturbations.from_pretrained(folder)
    if dtype == "fp16":
        mixture = mixture.half()  # floating tensors only; target_images stay uint8
    step = int(folder.name.split("-")[1])
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    at_step = [r for r in records if r["step"] == step][-1]
    train_entries, heldout, payload = data.read_split(run / data.SPLIT_NAME)
    info = {
        "steps": step, "batch_size": len(at_step["targets"]), "wall_time_s": at_step["elapsed_s"], "hardware": machine or hardware(),
        "train_images": len(train_entries), "heldout_images": len(heldout), "grouping": payload["grouping"],
        "domains": sorted({e.domain for e in train_entries}), "dtype": dtype, "config": notes or {}, "note": note,
    }
    mixture.save_pretrained(output, model_card_kwargs={"training": info})  # config.json, model.safetensors, README.md
    return output


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr-schedule", default="cosine")
    p.add_argument("--note", default=None, help="one line for the card (e.g. why the run was stopped early)")
    p.add_argument("--hardware", default=None, help="override the hardware line of the card (the training machine)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    folder = export(args.run, args.step, args.output, dtype=args.dtype,
                    notes={"seed": args.seed, "lr_schedule": args.lr_schedule}, machine=args.hardware, note=args.note)
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
