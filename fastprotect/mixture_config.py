"""MixtureConfig: what a mixture checkpoint's ``config.json`` holds, checked strictly (no torch here).

Everything needed to rebuild a :class:`fastprotect.mixture.MixtureOfPerturbations` and to use it
exactly as it was trained. Apart from the network module so that the model card
(:mod:`fastprotect.modelcard`) and the trainer's options can read it without the model.

Format versions: 2 (current) adds ``mimic_base`` and drops ``signature``; version 1 files are
migrated when read (:func:`migrate_v1`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .checkpoint_config import check_encoder_and_budget, check_integers, read_config_strictly
from .vocabulary import AUTOENCODER_KINDS, DEFAULT_ETA, MIMIC_FAMILY_OF_ENCODER, TARGET_NAMES, AutoencoderKind

FORMAT_VERSION = 2
# K-means descriptors of a latent (MixtureConfig.descriptor): name -> number of values per latent channel.
DESCRIPTORS = {"channel-mean-std": 2, "layout-4x4": 16}
# Format 1 stored the entropy signature's name; this was its only value (fastprotect.targets.entropy_signature).
V1_SIGNATURE = "value-and-spectral-entropy"


class CheckpointError(ValueError):
    """A mixture checkpoint that is malformed: wrong keys, shapes, field values or format version."""


@dataclass(frozen=True)
class MixtureConfig:
    """Everything needed to rebuild a mixture and to use it exactly as it was trained.

    Invalid values raise :class:`CheckpointError` at construction. ``mimic_base`` left empty is
    the family of ``encoder_kind`` (:data:`MIMIC_FAMILY_OF_ENCODER`).
    """

    format_version: int = FORMAT_VERSION
    num_targets: int = len(TARGET_NAMES)
    num_groups: int = 4
    size: int = 512  # side of every stored perturbation, pixels
    eta: float = DEFAULT_ETA  # training L∞ budget; global and group parts each within eta / 2
    encoder_kind: AutoencoderKind = "sd-vae"  # the encoder the mixture was trained against
    mimic_base: str = ""  # a MimicFamily: the model family whose mimicry it protects against
    encoder_source: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    encoder_subfolder: str | None = "vae"
    latent_channels: int = 4
    assign_size: int = 256  # the image is resized to assign_size² before the assignment encode
    descriptor: str = "channel-mean-std"  # K-means descriptor, see MixtureOfPerturbations.descriptor
    feature_weight: float = 1.0  # λ of the multi-layer loss used in training (informational: the card)

    def __post_init__(self) -> None:
        check_integers(self, ("format_version", "num_targets"), CheckpointError)
        check_integers(self, ("num_groups", "latent_channels"), CheckpointError, at_least=1)
        check_integers(self, ("size", "assign_size"), CheckpointError, at_least=8)  # pixels
        if self.format_version != FORMAT_VERSION:
            raise CheckpointError(
                f"format_version {self.format_version} is not supported (this fastprotect reads {FORMAT_VERSION}; version 1 files are migrated when read)"
            )
        if self.num_targets != len(TARGET_NAMES):
            raise CheckpointError(f"num_targets must be {len(TARGET_NAMES)} ({', '.join(TARGET_NAMES)}); got {self.num_targets}")
        check_encoder_and_budget(self, CheckpointError)
        if self.descriptor not in DESCRIPTORS:
            raise CheckpointError(f"unknown descriptor {self.descriptor!r}; known: {', '.join(DESCRIPTORS)}")
        if not isinstance(self.feature_weight, (int, float)) or self.feature_weight < 0:
            raise CheckpointError(f"feature_weight must be a number >= 0; got {self.feature_weight!r}")

    @property
    def descriptor_dim(self) -> int:
        return DESCRIPTORS[self.descriptor] * self.latent_channels

    @property
    def signature_dim(self) -> int:
        return 2 * self.latent_channels


def migrate_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A format-1 config dict as format 2: ``signature`` dropped (it had one possible value, which
    is refused otherwise), ``mimic_base`` set from ``encoder_kind`` (MIMIC_FAMILY_OF_ENCODER)."""
    known = {field.name for field in fields(MixtureConfig)} - {"mimic_base"} | {"signature"}
    unexpected, missing = sorted(set(raw) - known), sorted(known - set(raw))
    if unexpected or missing:
        raise CheckpointError(f"config fields do not match format_version 1: missing {missing}, unexpected {unexpected}")
    if raw["signature"] != V1_SIGNATURE:
        raise CheckpointError(f"signature {raw['signature']!r} is not supported (format_version 1 knew only {V1_SIGNATURE!r})")
    if raw["encoder_kind"] not in MIMIC_FAMILY_OF_ENCODER:
        raise CheckpointError(f"unknown encoder_kind {raw['encoder_kind']!r}; known: {', '.join(AUTOENCODER_KINDS)}")
    migrated = {name: value for name, value in raw.items() if name != "signature"}
    return migrated | {"format_version": FORMAT_VERSION, "mimic_base": MIMIC_FAMILY_OF_ENCODER[raw["encoder_kind"]]}


def _to_current_format(raw: dict[str, Any]) -> dict[str, Any]:
    """A config dict of any readable format version as the current one (version 1: :func:`migrate_v1`)."""
    version = raw.get("format_version")
    if version == 1:
        return migrate_v1(raw)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"format_version {version} is not supported (this fastprotect reads 1 and {FORMAT_VERSION})")
    return raw


def read_config(path: str | Path) -> MixtureConfig:
    """config.json -> MixtureConfig, strictly (every field, no other); format 1 is migrated."""
    return read_config_strictly(path, MixtureConfig, CheckpointError, _to_current_format)
