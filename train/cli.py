"""Command line of the trainer: ``python -m train --data DIR --output DIR [...]``.

Every check that can be made without loading a model (argument ranges and combinations, the
resume checkpoint, Hub reachability for ``--push-to-hub``) runs here, before anything is loaded,
so a bad command fails in a second rather than after the K-means fit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fastprotect.mixture import DESCRIPTORS
from fastprotect.targets import TARGET_NAMES

ENCODER_KINDS = ("sd-vae", "taesd", "taef2")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description="Pre-train a FastProtect mixture of perturbations.")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="image folders (sub-folder name = domain)")
    p.add_argument("--output", type=Path, required=True, help="run folder: split.json, log.jsonl, checkpoints/, final/")
    p.add_argument("--split", type=Path, default=None, help="reuse this split.json (same held-out images across runs)")
    p.add_argument("--heldout-fraction", type=float, default=0.15)
    p.add_argument("--max-train-images", type=int, default=None, help="cap the training set (quick runs, tests)")
    # encoder
    p.add_argument("--encoder-kind", choices=ENCODER_KINDS, default="sd-vae")
    p.add_argument("--encoder-source", default=None, help="local folder/file or Hub id (default: the kind's Hub source)")
    p.add_argument("--encoder-subfolder", default=None, help="sub-folder of the source (default 'vae' for the SD-1.5 repo)")
    p.add_argument("--publish-encoder-source", default=None,
                   help="encoder_source written into config.json (default: --encoder-source unless it is a local path, "
                        "then the kind's Hub id; users point at local weights with FASTPROTECT_ENCODER_SOURCE)")
    # mixture
    p.add_argument("--size", type=int, default=512, help="training resolution = side of the stored perturbations")
    p.add_argument("--assign-size", type=int, default=256, help="side of the copy encoded for assignment / target choice")
    p.add_argument("--num-groups", type=int, default=4, help="K of K-means; 1 = a single universal perturbation per target (UAP)")
    p.add_argument("--eta", type=float, default=8.0, help="training L∞ budget in 8-bit levels (global and group parts ±eta/2 each)")
    p.add_argument("--no-assignment", action="store_true", help="ablation: groups are a seeded random partition, not K-means")
    p.add_argument("--fixed-target", choices=TARGET_NAMES, default=None, help="ablation: every image uses this target (no entropy selection)")
    p.add_argument("--target-anchors", choices=("images", "patterns"), default="images",
                   help="target routing anchors: entropy terciles of the training images (default) or the patterns' own signatures")
    p.add_argument("--descriptor", choices=tuple(DESCRIPTORS), default="channel-mean-std",
                   help="K-means descriptor of the assignment latent (fastprotect.mixture.latent_descriptor)")
    p.add_argument("--kmeans-init", type=int, default=10, help="k-means++ restarts (n_init)")
    # loss and optimiser
    p.add_argument("--feature-weight", type=float, default=1.0, help="λ of the multi-layer loss (0 = latent only)")
    p.add_argument("--layers", default=None, help="comma-separated encoder feature indices for the loss (default: all)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--stop-at", type=int, default=None, help="checkpoint and stop at this step (the lr schedule still spans --steps; resume later)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate in [0,1] image units (default eta/10)")
    p.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto", help="autocast dtype; auto = bf16 on CUDA, fp32 on CPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    # bookkeeping
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--resume", default=None, help="'latest' (the newest checkpoint in --output) or a checkpoint folder")
    p.add_argument("--final-dtype", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--push-to-hub", default=None, metavar="REPO", help="create REPO on the Hub and upload final/ to it")
    p.add_argument("--private", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check; every error exits with status 2 before any model is loaded."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_groups < 1:
        parser.error("--num-groups must be >= 1")
    if args.no_assignment and args.num_groups == 1:
        parser.error("--no-assignment needs --num-groups > 1 (with one group there is nothing to assign)")
    for name in ("size", "assign_size"):
        value = getattr(args, name)
        if value < 8 or value % 8:
            parser.error(f"--{name.replace('_', '-')} must be a positive multiple of 8 (the encoders downsample by 8)")
    if not 1 <= args.eta <= 32:
        parser.error("--eta is in 8-bit levels and must be between 1 and 32")
    if args.steps < 1 or args.batch_size < 1 or args.save_every < 1:
        parser.error("--steps, --batch-size and --save-every must be >= 1")
    if args.stop_at is not None and not 1 <= args.stop_at <= args.steps:
        parser.error("--stop-at must be between 1 and --steps")
    if args.feature_weight < 0:
        parser.error("--feature-weight must be >= 0")
    if not 0 <= args.heldout_fraction < 1:
        parser.error("--heldout-fraction must be in [0, 1)")
    if args.lr is not None and args.lr <= 0:
        parser.error("--lr must be > 0")
    if args.max_train_images is not None and args.max_train_images < args.num_groups:
        parser.error("--max-train-images must be at least --num-groups")
    if args.precision in ("bf16", "fp16") and not str(args.device).startswith("cuda"):
        parser.error(f"--precision {args.precision} is for CUDA devices only (autocast on CPU is not used)")
    if args.layers is not None:
        try:
            args.layers = [int(i) for i in args.layers.split(",") if i.strip()]
        except ValueError:
            parser.error("--layers is a comma-separated list of integers, e.g. 0,1,2,3")
    if args.resume is not None and args.split is not None:
        parser.error("--resume reuses the run's own split.json; do not pass --split with it")
    for folder in args.data:
        if not folder.is_dir():
            parser.error(f"--data {folder}: not a folder")
    if args.split is not None and not args.split.is_file():
        parser.error(f"--split {args.split}: no such file")
    if args.resume is not None:
        from .checkpoints import find_checkpoint

        try:
            args.resume = find_checkpoint(args.output, args.resume)
        except FileNotFoundError as error:
            parser.error(str(error))
    if args.push_to_hub is not None:
        from .hub import HubUnavailableError, check_push_access

        try:
            check_push_access(args.push_to_hub)
        except HubUnavailableError as error:
            parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from .trainer import train

    result = train(args)
    print(f"final checkpoint: {result}")
    return 0
