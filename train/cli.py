"""Command line of the trainer: ``python -m train --data DIR --output DIR [...]``.

The flags are :class:`train.config.TrainConfig`'s fields (same names with dashes, same defaults;
``--eta`` in 8-bit levels, ``--no-progress``). Every check that can be made without loading a
model (the config's rules, then its preflight: data folders, the split, the resume checkpoint,
Hub reachability for ``--push-to-hub``) runs before anything is loaded, so a bad command fails in
a second with one line and exit status 2 rather than after the K-means fit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fastprotect.argparsing import OneLineArgumentParser
from fastprotect.mixture_config import DESCRIPTORS
from fastprotect.vocabulary import AUTOENCODER_KINDS, DEFAULT_ETA_LEVELS, MAX_ETA_LEVELS, TARGET_NAMES, eta_from_levels

from .config import FINAL_DTYPES, LR_SCHEDULES, PRECISIONS, TARGET_ANCHORS, TrainConfig, TrainConfigError

DEFAULTS = TrainConfig(data=(Path("."),), output=Path("."))  # the defaults shown in --help


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = OneLineArgumentParser(prog="python -m train", description="Pre-train a FastProtect mixture of perturbations.")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="image folders (sub-folder name = domain)")
    p.add_argument("--output", type=Path, required=True, help="run folder: split.json, log.jsonl, checkpoints/, final/")
    p.add_argument("--split", type=Path, default=None, help="reuse this split.json (same held-out images across runs)")
    p.add_argument("--heldout-fraction", type=float, default=d.heldout_fraction)
    p.add_argument("--max-train-images", type=int, default=None, help="cap the training set (quick runs, tests)")
    # encoder
    p.add_argument("--encoder-kind", choices=AUTOENCODER_KINDS, default=d.encoder_kind)
    p.add_argument("--encoder-source", default=None, help="local folder/file or Hub id (default: the kind's Hub source)")
    p.add_argument("--encoder-subfolder", default=None, help="sub-folder of the source (default 'vae' for the SD-1.5 repo)")
    p.add_argument("--publish-encoder-source", default=None,
                   help="encoder_source written into config.json (default: --encoder-source unless it is a local path, "
                        "then the kind's Hub id; users point at local weights with FASTPROTECT_ENCODER_SOURCE)")
    # mixture
    p.add_argument("--size", type=int, default=d.size, help="training resolution = side of the stored perturbations")
    p.add_argument("--assign-size", type=int, default=d.assign_size, help="side of the copy encoded for assignment / target choice")
    p.add_argument("--num-groups", type=int, default=d.num_groups, help="K of K-means; 1 = a single universal perturbation per target (UAP)")
    p.add_argument("--eta", type=float, default=float(DEFAULT_ETA_LEVELS),
                   help=f"training L∞ budget in 8-bit levels, 1–{MAX_ETA_LEVELS} (global and group parts ±eta/2 each)")
    p.add_argument("--no-assignment", action="store_true", help="ablation: groups are a seeded random partition, not K-means")
    p.add_argument("--fixed-target", choices=TARGET_NAMES, default=None, help="ablation: every image uses this target (no entropy selection)")
    p.add_argument("--target-anchors", choices=TARGET_ANCHORS, default=d.target_anchors,
                   help="target routing anchors: entropy terciles of the training images (default) or the patterns' own signatures")
    p.add_argument("--descriptor", choices=tuple(DESCRIPTORS), default=d.descriptor,
                   help="K-means descriptor of the assignment latent (fastprotect.mixture.latent_descriptor)")
    p.add_argument("--kmeans-init", type=int, default=d.kmeans_init, help="k-means++ restarts (n_init)")
    # loss and optimiser
    p.add_argument("--feature-weight", type=float, default=d.feature_weight, help="λ of the multi-layer loss (0 = latent only)")
    p.add_argument("--layers", default=None, help="comma-separated encoder feature indices for the loss (default: all)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--stop-at", type=int, default=None, help="checkpoint and stop at this step (the lr schedule still spans --steps; resume later)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate in [0,1] image units (default eta/10)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="autocast dtype; auto = bf16 on CUDA, fp32 on CPU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    # bookkeeping
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--resume", default=None, help="'latest' (the newest checkpoint in --output) or a checkpoint folder")
    p.add_argument("--final-dtype", choices=FINAL_DTYPES, default=d.final_dtype)
    p.add_argument("--push-to-hub", default=None, metavar="REPO", help="create REPO on the Hub and upload final/ to it")
    p.add_argument("--private", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed arguments; raises TrainConfigError (or ValueError for --eta / --layers)."""
    options = {key: value for key, value in vars(args).items() if key not in ("eta", "layers", "no_progress")}
    try:
        eta = eta_from_levels(args.eta)
    except ValueError as error:
        raise TrainConfigError(f"--eta is in 8-bit levels: {error}") from None
    layers = None
    if args.layers is not None:
        try:
            layers = tuple(int(i) for i in args.layers.split(",") if i.strip())
        except ValueError:
            raise TrainConfigError("--layers is a comma-separated list of integers, e.g. 0,1,2,3") from None
    return TrainConfig(**options, eta=eta, layers=layers, progress=not args.no_progress)


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse the options into a TrainConfig (its rules checked); misuse exits with status 2."""
    parser = build_parser()
    try:
        return config_from_args(parser.parse_args(argv))
    except TrainConfigError as error:
        parser.error(str(error))


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    from .trainer import train

    try:
        result = train(config)  # its preflight (files, resume, Hub) runs before any model loads
    except TrainConfigError as error:
        build_parser().error(str(error))
    print(f"final checkpoint: {result}")
    return 0
