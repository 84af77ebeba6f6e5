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

The config, its checks and its format versions: :mod:`fastprotect.mixture_config`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin
from torch import nn

from .hub import WeightsUnavailableError, load_state_strictly, resolve_file
from .modelcard import card_body, card_metadata
from .mixture_config import DESCRIPTORS, FORMAT_VERSION, CheckpointError, MixtureConfig, migrate_v1, read_config
from .targets import entropy_signature, target_patterns
from .vocabulary import MIMIC_FAMILIES, MIMIC_FAMILY_OF_ENCODER

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
LOAD_HINT = "Pass a local checkpoint folder (--checkpoint or FASTPROTECT_CHECKPOINT)."


class MixtureOfPerturbations(
    nn.Module,
    PyTorchModelHubMixin,
    **card_metadata(),  # the same YAML header as the generator's card
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
        config = read_config(resolve_file(pretrained_model_name_or_path, CONFIG_NAME, hint=LOAD_HINT, **hub))
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
            config = read_config(resolve_file(model_id, CONFIG_NAME, hint=LOAD_HINT, **hub))
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


__all__ = [  # the config's names too: callers import the mixture and its config from here
    "CheckpointError", "DESCRIPTORS", "FORMAT_VERSION", "MIMIC_FAMILIES", "MIMIC_FAMILY_OF_ENCODER", "MixtureConfig", "MixtureOfPerturbations",
    "WeightsUnavailableError", "migrate_v1",
]
