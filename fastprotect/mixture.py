"""MixtureOfPerturbations: the pre-trained protection, one checkpoint on the Hub or on disk.

For each target pattern t (``low``/``mid``/``high``) the mixture holds one global perturbation
δ_g^t and K group perturbations Δ_k^t, each 3×S×S and each within ±η/2, so that their sum stays
within the training budget η. An image gets ``δ_g^t + Δ_k^t``, where k is its K-means group
(:meth:`assign`) and t its target (:meth:`select_target`), both read off its latent.

A checkpoint folder holds ``config.json`` (a frozen :class:`MixtureConfig` with
``format_version``), ``model.safetensors`` and a ``README.md`` model card
(:mod:`fastprotect.modelcard`). ``huggingface_hub.PyTorchModelHubMixin`` provides
``from_pretrained`` / ``save_pretrained`` / ``push_to_hub``; this class implements its hooks
(``_from_pretrained``, ``_save_pretrained``, ``generate_model_card``). Loading is strict.

Config format versions: 2 (current) adds ``mimic_base`` and drops ``signature``; version 1 files
are migrated when read (:func:`migrate_v1`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin
from torch import nn

from .hub import WeightsUnavailableError, load_state_strictly, resolve_file
from .targets import entropy_signature, target_patterns
from .vocabulary import (
    AUTOENCODER_KINDS, DEFAULT_ETA, MAX_ETA, MIMIC_FAMILIES, MIMIC_FAMILY_OF_ENCODER, TARGET_NAMES, AutoencoderKind, check_eta,
)

FORMAT_VERSION = 2
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
# K-means descriptors of a latent (MixtureConfig.descriptor): name -> number of values per latent channel.
DESCRIPTORS = {"channel-mean-std": 2, "layout-4x4": 16}
# The mimic model family a checkpoint protects against (MixtureConfig.mimic_base, issue 11): the
# diffusion models whose VAE the training encoder is, or approximates.
# Format 1 stored the entropy signature's name; this was its only value (fastprotect.targets.entropy_signature).
V1_SIGNATURE = "value-and-spectral-entropy"
LOAD_HINT = "Pass a local checkpoint folder (--checkpoint or FASTPROTECT_CHECKPOINT)."


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
        if not self.mimic_base and self.encoder_kind in MIMIC_FAMILY_OF_ENCODER:
            object.__setattr__(self, "mimic_base", MIMIC_FAMILY_OF_ENCODER[self.encoder_kind])
        for name in ("format_version", "num_targets", "num_groups", "size", "latent_channels", "assign_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise CheckpointError(f"{name} must be an integer; got {value!r}")
        if self.format_version != FORMAT_VERSION:
            raise CheckpointError(
                f"format_version {self.format_version} is not supported (this fastprotect reads {FORMAT_VERSION}; version 1 files are migrated when read)"
            )
        if self.num_targets != len(TARGET_NAMES):
            raise CheckpointError(f"num_targets must be {len(TARGET_NAMES)} ({', '.join(TARGET_NAMES)}); got {self.num_targets}")
        if self.encoder_kind not in AUTOENCODER_KINDS:
            raise CheckpointError(f"unknown encoder_kind {self.encoder_kind!r}; known: {', '.join(AUTOENCODER_KINDS)}")
        if self.mimic_base not in MIMIC_FAMILIES:
            raise CheckpointError(f"unknown mimic_base {self.mimic_base!r}; known: {', '.join(MIMIC_FAMILIES)}")
        if self.descriptor not in DESCRIPTORS:
            raise CheckpointError(f"unknown descriptor {self.descriptor!r}; known: {', '.join(DESCRIPTORS)}")
        if self.num_groups < 1:
            raise CheckpointError(f"num_groups must be at least 1; got {self.num_groups}")
        if self.size < 8 or self.assign_size < 8:
            raise CheckpointError(f"size and assign_size must be at least 8 pixels; got {self.size} and {self.assign_size}")
        if self.latent_channels < 1:
            raise CheckpointError(f"latent_channels must be at least 1; got {self.latent_channels}")
        try:
            check_eta(self.eta)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"eta {self.eta!r} is not a budget in (0, {MAX_ETA:.4f}]: {error}") from None
        if not isinstance(self.feature_weight, (int, float)) or self.feature_weight < 0:
            raise CheckpointError(f"feature_weight must be a number >= 0; got {self.feature_weight!r}")

    @property
    def descriptor_dim(self) -> int:
        return DESCRIPTORS[self.descriptor] * self.latent_channels

    @property
    def signature_dim(self) -> int:
        return 2 * self.latent_channels


class MixtureOfPerturbations(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="fastprotect",
    license="mit",
    tags=["image-protection", "adversarial-perturbation"],
    paper_url="https://arxiv.org/abs/2412.11423",
):
    """Targets × (global + K groups) perturbations with their routing data. Images are in [0, 1]."""

    def __init__(self, config: MixtureConfig) -> None:
        super().__init__()
        self.config = config  # validated by MixtureConfig itself
        t, k, s = config.num_targets, config.num_groups, config.size
        self.global_perturbations = nn.Parameter(torch.zeros(t, 3, s, s))
        self.group_perturbations = nn.Parameter(torch.zeros(t, k, 3, s, s))
        # K-means runs on standardised descriptors: (d - descriptor_mean) / descriptor_std.
        self.register_buffer("descriptor_mean", torch.zeros(config.descriptor_dim))
        self.register_buffer("descriptor_std", torch.ones(config.descriptor_dim))
        self.register_buffer("centroids", torch.zeros(k, config.descriptor_dim))
        self.register_buffer("target_signatures", torch.zeros(t, config.signature_dim))
        # Stored as 8-bit so the UI can show the targets and PGD can encode them at any size.
        self.register_buffer("target_images", (target_patterns(s) * 255).round().to(torch.uint8))

    # ----------------------------------------------------------------------------- routing
    def descriptor(self, latent: torch.Tensor) -> torch.Tensor:
        """K-means descriptor of a B×C×h×w latent, B×descriptor_dim (``config.descriptor``).

        ``channel-mean-std``: per-channel spatial mean and std (2C): colour and texture statistics,
        blind to where things are. ``layout-4x4``: per-channel means over a 4×4 grid (16C): the
        coarse spatial layout, so that a group gathers images whose content sits in the same
        places, the only thing a fixed, spatially aligned perturbation could exploit per group.
        """
        return latent_descriptor(latent, self.config.descriptor)

    def assign(self, latent: torch.Tensor) -> torch.Tensor:
        """Group index (B, long) of each latent: the nearest centroid in standardised descriptor space."""
        d = (self.descriptor(latent) - self.descriptor_mean) / self.descriptor_std
        return torch.cdist(d, self.centroids.float()).argmin(dim=1)

    def select_target(self, latent: torch.Tensor) -> torch.Tensor:
        """Target index (B, long): argmin_t ‖H(z) − H(E(y_t))‖₁ over the stored target signatures."""
        distances = torch.cdist(entropy_signature(latent), self.target_signatures.float(), p=1)
        return distances.argmin(dim=1)

    def target_images_float(self) -> torch.Tensor:
        """The target patterns, T×3×S×S float in [0, 1]."""
        return self.target_images.float() / 255

    # ------------------------------------------------------------------------ perturbations
    def perturbation(self, target: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """δ_g^t + Δ_k^t for each (t, k) pair: B×3×S×S, within ±eta (L∞)."""
        return self.global_perturbations[target] + self.group_perturbations[target, group]

    @torch.no_grad()
    def project_(self) -> None:
        """Clip every stored perturbation to ±eta/2 in place (after each optimiser step)."""
        half = self.config.eta / 2
        self.global_perturbations.clamp_(-half, half)
        self.group_perturbations.clamp_(-half, half)

    # ------------------------------------------------------------- the Hub mixin's hooks
    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        **model_kwargs: Any,
    ) -> MixtureOfPerturbations:
        """Load strictly from a local folder or a Hub repo id (the mixin's ``from_pretrained``).

        ``revision``, ``token``, ``cache_dir``, ``local_files_only`` and ``force_download`` reach
        ``hf_hub_download`` for a Hub id and are ignored for a local folder. Every problem is a
        one-line error: an unreachable Hub or a missing file raises ``WeightsUnavailableError``;
        malformed config fields or tensors, wrong shapes and unknown format versions raise
        :class:`CheckpointError`. Tensors are loaded as float32 whatever their stored precision.

        This only fetches and checks ``config.json`` first: the mixin's own fetch and ``json.load``
        of it would let raw ``huggingface_hub`` and JSON errors escape (offline, a bad repo id, a
        corrupt file). The checked config is handed on; the rest is the mixin's, then
        :meth:`_from_pretrained`.
        """
        hub = {"revision": revision, "cache_dir": cache_dir, "token": token, "local_files_only": local_files_only, "force_download": force_download}
        config = _read_config(resolve_file(pretrained_model_name_or_path, CONFIG_NAME, hint=LOAD_HINT, **hub))
        return super().from_pretrained(pretrained_model_name_or_path, **hub, config=config, **model_kwargs)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: MixtureConfig | Mapping | None = None,
    ) -> MixtureOfPerturbations:
        """The mixin's loading hook: ``config.json`` (unless already checked) + ``model.safetensors``."""
        hub = {"revision": revision, "cache_dir": cache_dir, "token": token, "local_files_only": local_files_only, "force_download": force_download}
        if not isinstance(config, MixtureConfig):  # the mixin's raw dict, or none: read the file strictly
            config = _read_config(resolve_file(model_id, CONFIG_NAME, hint=LOAD_HINT, **hub))
        weights_path = resolve_file(model_id, WEIGHTS_NAME, hint=LOAD_HINT, **hub)
        model = cls(config)
        load_state_strictly(model, weights_path, CheckpointError, what="MixtureConfig")
        return model.eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's saving hook: config.json + model.safetensors (state dict as is: ``.half()`` first for fp16).

        A README.md already in the folder describes other weights: it is removed, and the mixin
        then writes :meth:`generate_model_card`'s card (with ``save_pretrained(...,
        model_card_kwargs={"training": ..., "evaluation": ...})``).
        """
        from safetensors.torch import save_file

        save_directory = Path(save_directory)
        (save_directory / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        save_file(state, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt", "format_version": str(self.config.format_version)})
        (save_directory / CARD_NAME).unlink(missing_ok=True)

    def generate_model_card(self, *, training: Mapping[str, Any] | None = None, evaluation: str | None = None) -> ModelCard:  # type: ignore[override]
        """The README.md of every save: what the checkpoint is, its encoder, mimic family, η, groups,
        targets, how to use it, the licence; training details from ``training`` (the trainer's
        record, :func:`fastprotect.modelcard.card_body`) and the evaluation report (markdown) when given."""
        from .modelcard import card_body

        data = ModelCardData(**self._hub_mixin_info.model_card_data.to_dict())
        dtype = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.global_perturbations.dtype, "fp32")
        body = card_body(self.config, dtype=dtype, training=training, evaluation=evaluation)
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def latent_descriptor(latent: torch.Tensor, kind: str) -> torch.Tensor:
    """The descriptor ``kind`` (a key of DESCRIPTORS) of a B×C×h×w latent, float32."""
    z = latent.detach().float()
    if kind == "channel-mean-std":
        flat = z.flatten(2)
        return torch.cat([flat.mean(-1), flat.std(-1)], dim=1)
    if kind == "layout-4x4":
        return torch.nn.functional.adaptive_avg_pool2d(z, 4).flatten(1)
    raise CheckpointError(f"unknown descriptor {kind!r}; known: {', '.join(DESCRIPTORS)}")


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


def _read_config(path: Path) -> MixtureConfig:
    """config.json -> MixtureConfig, strictly (every field, no other); format 1 is migrated."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable config ({error})") from error
    try:
        if not isinstance(raw, dict):
            raise CheckpointError("config.json must hold a JSON object")
        version = raw.get("format_version")
        if version == 1:
            raw = migrate_v1(raw)
        elif version != FORMAT_VERSION:
            raise CheckpointError(f"format_version {version} is not supported (this fastprotect reads 1 and {FORMAT_VERSION})")
        known = {field.name for field in fields(MixtureConfig)}
        unexpected, missing = sorted(set(raw) - known), sorted(known - set(raw))
        if unexpected or missing:
            raise CheckpointError(f"config fields do not match this fastprotect version: missing {missing}, unexpected {unexpected}")
        return MixtureConfig(**raw)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


__all__ = [
    "CheckpointError", "FORMAT_VERSION", "MIMIC_FAMILIES", "MIMIC_FAMILY_OF_ENCODER", "MixtureConfig", "MixtureOfPerturbations",
    "WeightsUnavailableError", "migrate_v1",
]
