"""MixtureOfPerturbations: the pre-trained protection, one checkpoint on the Hub or on disk.

For each target pattern t (``low``/``mid``/``high``) the mixture holds one global perturbation
δ_g^t and K group perturbations Δ_k^t, each 3×S×S and each within ±η/2, so that their sum stays
within the training budget η. An image gets ``δ_g^t + Δ_k^t``, where k is its K-means group
(:meth:`assign`) and t its target (:meth:`select_target`), both read off its latent.

Saved as ``config.json`` (a frozen :class:`MixtureConfig` with ``format_version``) next to
``model.safetensors`` through ``huggingface_hub.PyTorchModelHubMixin``; loading is strict.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .hub import WeightsUnavailableError, resolve_file
from .targets import TARGET_NAMES, entropy_signature, target_patterns

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
# K-means descriptors of a latent (MixtureConfig.descriptor): name -> number of values per latent channel.
DESCRIPTORS = {"channel-mean-std": 2, "layout-4x4": 16}
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A mixture checkpoint that is malformed: wrong keys, shapes or format version."""


@dataclass(frozen=True)
class MixtureConfig:
    """Everything needed to rebuild a mixture and to use it exactly as it was trained."""

    format_version: int = FORMAT_VERSION
    num_targets: int = len(TARGET_NAMES)
    num_groups: int = 4
    size: int = 512  # side of every stored perturbation, pixels
    eta: float = 8 / 255  # training L∞ budget; global and group parts each within eta / 2
    encoder_kind: str = "sd-vae"  # fastprotect.encoders.AutoencoderKind the mixture was trained against
    encoder_source: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    encoder_subfolder: str | None = "vae"
    latent_channels: int = 4
    assign_size: int = 256  # the image is resized to assign_size² before the assignment encode
    descriptor: str = "channel-mean-std"  # K-means descriptor, see MixtureOfPerturbations.descriptor
    signature: str = "value-and-spectral-entropy"  # see fastprotect.targets.entropy_signature
    feature_weight: float = 1.0  # λ of the multi-layer loss used in training (informational)

    def __post_init__(self) -> None:
        if self.descriptor not in DESCRIPTORS:
            raise CheckpointError(f"unknown descriptor {self.descriptor!r}; known: {', '.join(DESCRIPTORS)}")

    @property
    def descriptor_dim(self) -> int:
        return DESCRIPTORS[self.descriptor] * self.latent_channels

    @property
    def signature_dim(self) -> int:
        return 2 * self.latent_channels


class MixtureOfPerturbations(nn.Module, PyTorchModelHubMixin, library_name="fastprotect", tags=["image-protection"]):
    """Targets × (global + K groups) perturbations with their routing data. Images are in [0, 1]."""

    def __init__(self, config: MixtureConfig) -> None:
        super().__init__()
        if config.num_targets != len(TARGET_NAMES):
            raise CheckpointError(f"num_targets must be {len(TARGET_NAMES)} ({', '.join(TARGET_NAMES)})")
        self.config = config
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

    # --------------------------------------------------------------------------- save/load
    def _save_pretrained(self, save_directory: Path) -> None:
        """config.json + model.safetensors (state dict as is: cast with ``.half()`` first for fp16)."""
        from safetensors.torch import save_file

        save_directory = Path(save_directory)
        (save_directory / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        save_file(state, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt", "format_version": str(FORMAT_VERSION)})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **_: Any) -> "MixtureOfPerturbations":  # type: ignore[override]
        """Load strictly from a local folder or a Hub repo id; every problem is a one-line error.

        Missing or unexpected config fields or tensors, wrong shapes and unknown format versions
        raise :class:`CheckpointError`; an unreachable Hub raises ``WeightsUnavailableError``.
        Tensors are loaded as float32 whatever their stored precision.
        """
        from safetensors.torch import load_file

        hint = "Pass a local checkpoint folder (--checkpoint or FASTPROTECT_CHECKPOINT)."
        config_path = resolve_file(pretrained_model_name_or_path, CONFIG_NAME, hint=hint)
        weights_path = resolve_file(pretrained_model_name_or_path, WEIGHTS_NAME, hint=hint)
        config = _read_config(config_path)
        model = cls(config)
        state = load_file(str(weights_path))
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{weights_path}: checkpoint does not match MixtureConfig: missing tensors {missing}, unexpected tensors {unexpected}"
            )
        for name, tensor in state.items():
            if tensor.shape != expected[name].shape:
                raise CheckpointError(f"{weights_path}: tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
        model.load_state_dict({name: tensor.to(expected[name].dtype) for name, tensor in state.items()}, strict=True)
        return model.eval()


def latent_descriptor(latent: torch.Tensor, kind: str) -> torch.Tensor:
    """The descriptor ``kind`` (a key of DESCRIPTORS) of a B×C×h×w latent, float32."""
    z = latent.detach().float()
    if kind == "channel-mean-std":
        flat = z.flatten(2)
        return torch.cat([flat.mean(-1), flat.std(-1)], dim=1)
    if kind == "layout-4x4":
        return torch.nn.functional.adaptive_avg_pool2d(z, 4).flatten(1)
    raise CheckpointError(f"unknown descriptor {kind!r}; known: {', '.join(DESCRIPTORS)}")


def _read_config(path: Path) -> MixtureConfig:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable config ({error})") from error
    known = {field.name for field in fields(MixtureConfig)}
    unexpected, missing = sorted(set(raw) - known), sorted(known - set(raw))
    if unexpected or missing:
        raise CheckpointError(f"{path}: config fields do not match this fastprotect version: missing {missing}, unexpected {unexpected}")
    if raw["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {raw['format_version']} is not supported (this fastprotect reads {FORMAT_VERSION})")
    try:
        return MixtureConfig(**raw)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error


__all__ = ["CheckpointError", "MixtureConfig", "MixtureOfPerturbations", "FORMAT_VERSION", "WeightsUnavailableError"]
