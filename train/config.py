"""The options of a training run, typed, with their rules: :class:`TrainConfig`.

The command line (``train/cli.py``) and library callers (``train.trainer.train(config)``) build
the same frozen dataclass, so both get the same defaults and the same checks:

* ``__post_init__``: every rule on the values themselves and between them (ranges, ``--stop-at``
  within ``--steps``, ``--no-assignment`` needs groups, CUDA-only precisions, ...);
* :meth:`TrainConfig.preflight`: what needs the file system or the network but no model (data
  folders, the split file, the checkpoint to resume, Hub push access). ``train()`` runs it first.

Both raise :class:`TrainConfigError` with a one-line message. The budget is in image units, as
everywhere in the library (:mod:`fastprotect.vocabulary`); the command line takes 8-bit levels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastprotect.mixture_config import DESCRIPTORS
from fastprotect.vocabulary import AUTOENCODER_KINDS, DEFAULT_ETA, TARGET_NAMES, AutoencoderKind, TargetName, check_eta

TargetAnchors = Literal["images", "patterns"]
TARGET_ANCHORS: tuple[TargetAnchors, ...] = ("images", "patterns")
LrSchedule = Literal["cosine", "constant"]
LR_SCHEDULES: tuple[LrSchedule, ...] = ("cosine", "constant")
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16", "fp16")
FinalDtype = Literal["fp16", "fp32"]
FINAL_DTYPES: tuple[FinalDtype, ...] = ("fp16", "fp32")


class TrainConfigError(ValueError):
    """Training options that cannot work together, or that name something absent (one line)."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``python -m train`` (same names without the dashes, same defaults)."""

    data: tuple[Path, ...]  # image folders; an image's sub-folder name is its domain
    output: Path  # run folder: split.json, log.jsonl, checkpoints/, final/
    split: Path | None = None  # reuse this split.json (same held-out images across runs)
    heldout_fraction: float = 0.15
    max_train_images: int | None = None  # cap the training set (quick runs, tests)
    # encoder
    encoder_kind: AutoencoderKind = "sd-vae"
    encoder_source: str | None = None  # local folder/file or Hub id; None: the kind's Hub default
    encoder_subfolder: str | None = None  # None: the default's own ("vae" in the SD-1.5 repo)
    publish_encoder_source: str | None = None  # written into config.json; None: encoder_source unless local
    # mixture
    size: int = 512  # training resolution = side of the stored perturbations
    assign_size: int = 256  # side of the copy encoded for assignment / target choice
    num_groups: int = 4  # K of K-means; 1 = one universal perturbation per target (UAP)
    eta: float = DEFAULT_ETA  # training L∞ budget in image units (global and group parts ±eta/2 each)
    no_assignment: bool = False  # ablation: groups are a seeded random partition, not K-means
    fixed_target: TargetName | None = None  # ablation: every image uses this target
    target_anchors: TargetAnchors = "images"  # entropy terciles of the training images, or the patterns' own signatures
    descriptor: str = "channel-mean-std"  # K-means descriptor (fastprotect.mixture_config.DESCRIPTORS)
    kmeans_init: int = 10  # k-means++ restarts (n_init)
    # loss and optimiser
    feature_weight: float = 1.0  # λ of the multi-layer loss (0 = latent only)
    layers: tuple[int, ...] | None = None  # encoder feature indices for the loss; None: all
    steps: int = 1000
    stop_at: int | None = None  # checkpoint and stop here; the lr schedule still spans `steps`
    batch_size: int = 4
    lr: float | None = None  # Adam learning rate in image units; None: eta / 10
    lr_schedule: LrSchedule = "cosine"
    seed: int = 0
    device: str = "cpu"
    precision: Precision = "auto"  # autocast dtype; auto = bf16 on CUDA, fp32 on CPU
    threads: int | None = None  # torch CPU threads
    # bookkeeping
    save_every: int = 50
    resume: str | Path | None = None  # "latest" (the newest checkpoint in `output`) or a checkpoint folder
    final_dtype: FinalDtype = "fp16"
    push_to_hub: str | None = None  # create this Hub repo and upload final/ to it
    private: bool = False
    progress: bool = True  # a tqdm progress bar

    def __post_init__(self) -> None:
        data = (self.data,) if isinstance(self.data, (str, Path)) else self.data
        object.__setattr__(self, "data", tuple(Path(folder) for folder in data))
        object.__setattr__(self, "output", Path(self.output))
        if self.split is not None:
            object.__setattr__(self, "split", Path(self.split))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        self._check_rules()

    def _check_rules(self) -> None:
        def fail(message: str) -> None:
            raise TrainConfigError(message)

        if not self.data:
            fail("data: give at least one image folder")
        for name, value, choices in (
            ("encoder_kind", self.encoder_kind, AUTOENCODER_KINDS), ("descriptor", self.descriptor, tuple(DESCRIPTORS)),
            ("target_anchors", self.target_anchors, TARGET_ANCHORS), ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
            ("precision", self.precision, PRECISIONS), ("final_dtype", self.final_dtype, FINAL_DTYPES),
        ):
            if value not in choices:
                fail(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        if self.fixed_target is not None and self.fixed_target not in TARGET_NAMES:
            fail(f"fixed_target must be one of {', '.join(TARGET_NAMES)}; got {self.fixed_target!r}")
        if self.num_groups < 1:
            fail("num_groups must be at least 1")
        if self.no_assignment and self.num_groups == 1:
            fail("no_assignment needs num_groups > 1 (with one group there is nothing to assign)")
        for name in ("size", "assign_size"):
            value = getattr(self, name)
            if value < 8 or value % 8:
                fail(f"{name} must be a positive multiple of 8 (the encoders downsample by 8); got {value}")
        try:
            check_eta(self.eta)
        except ValueError as error:
            fail(str(error))
        for name in ("steps", "batch_size", "save_every", "kmeans_init"):
            if getattr(self, name) < 1:
                fail(f"{name} must be at least 1")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.steps:
            fail(f"stop_at must be between 1 and steps ({self.steps}); got {self.stop_at}")
        if self.feature_weight < 0:
            fail("feature_weight must be >= 0")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            fail("layers must be a non-empty list of feature indices >= 0")
        if not 0 <= self.heldout_fraction < 1:
            fail("heldout_fraction must be in [0, 1)")
        if self.lr is not None and self.lr <= 0:
            fail("lr must be > 0")
        if self.max_train_images is not None and self.max_train_images < self.num_groups:
            fail("max_train_images must be at least num_groups")
        if self.threads is not None and self.threads < 1:
            fail("threads must be at least 1")
        if self.precision in ("bf16", "fp16") and not str(self.device).startswith("cuda"):
            fail(f"precision {self.precision} is for CUDA devices only (autocast on CPU is not used)")
        if self.resume is not None and self.split is not None:
            fail("resume reuses the run's own split.json; do not pass split with it")

    @property
    def learning_rate(self) -> float:
        """The base learning rate: ``lr``, else eta / 10."""
        return self.lr if self.lr is not None else self.eta / 10

    def preflight(self) -> TrainConfig:
        """Check what needs files or the network but no model; returns the config with ``resume``
        resolved to its checkpoint folder. Raises :class:`TrainConfigError`."""
        for folder in self.data:
            if not folder.is_dir():
                raise TrainConfigError(f"data {folder}: not a folder")
        if self.split is not None and not self.split.is_file():
            raise TrainConfigError(f"split {self.split}: no such file")
        resume = self.resume
        if resume is not None:
            from .checkpoints import find_checkpoint

            try:
                resume = find_checkpoint(self.output, resume)
            except FileNotFoundError as error:
                raise TrainConfigError(str(error)) from None
        if self.push_to_hub is not None:
            from .hub import HubUnavailableError, check_push_access

            try:
                check_push_access(self.push_to_hub)
            except HubUnavailableError as error:
                raise TrainConfigError(str(error)) from None
        return dataclasses.replace(self, resume=resume)

    def as_record(self) -> dict[str, Any]:
        """The options as JSON-ready values (train_info.json, the model card)."""
        record = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            record[item.name] = value
        return record
