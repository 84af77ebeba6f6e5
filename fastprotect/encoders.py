"""Frozen VAE encoders (and decoders) behind one interface: latent plus intermediate features.

Two families, one API:

- ``"sd-vae"``: Stable Diffusion's ``AutoencoderKL`` through diffusers. The latent is the
  posterior *mean*, unscaled (no ``scaling_factor``): what the protection loss compares.
- ``"taesd"`` / ``"taef2"``: the tiny autoencoders of madebyollin/taesd (``fastprotect.taesd``),
  loaded from their original positional-key files ``{kind}_encoder.(safetensors|pth)`` and
  ``{kind}_decoder.(...)``. Their latents live on the *scaled* latent scale of the VAE they
  imitate (TAESD ≈ SD mean × 0.18215; TAEF2 imitates FLUX.2, not SD), so latent distances are
  only comparable within one kind.

Every encoder takes images B×3×H×W in [0, 1], is frozen (eval mode, no parameter gradients) but
differentiable with respect to its input, and returns a latent B×C×ceil(H/d)×ceil(W/d) for its
``downscale`` d (8 for every real checkpoint). Nothing is built or downloaded at import time.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from fastprotect import taesd
from fastprotect.hub import WeightsUnavailableError, is_local, resolve_file
from fastprotect.sources import KIND_ENV_VARS, encoder_source
from fastprotect.vocabulary import AUTOENCODER_KINDS, AutoencoderKind

if TYPE_CHECKING:  # diffusers is heavy to import; only the SD loader needs it at run time
    from diffusers import AutoencoderKL


@dataclass
class EncoderOutput:
    """What an encoder returns.

    latent:   B×C×h×w, h = ceil(H / downscale), w = ceil(W / downscale).
    features: intermediate feature maps, shallow -> deep, each B×C_l×H_l×W_l (see the encoder's
              ``feature_channels`` / ``feature_strides``; computed on the input padded to a
              multiple of ``downscale``).
    """

    latent: torch.Tensor
    features: list[torch.Tensor]


def _freeze(module: nn.Module) -> None:
    module.requires_grad_(False)
    module.eval()


class _Frozen(nn.Module):
    """Base of the wrappers here: parameters never train and the module stays in eval mode."""

    def train(self, mode: bool = True) -> _Frozen:
        # A parent's .train() must not switch dropout/normalisation of a frozen network back on.
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class ImageEncoder(_Frozen):
    """Abstract frozen encoder: images B×3×H×W in [0, 1] -> :class:`EncoderOutput`.

    Subclasses set the attributes below and implement ``_encode_padded`` for inputs whose H and
    W are multiples of ``downscale``.
    """

    kind: AutoencoderKind
    latent_channels: int
    downscale: int = 8
    feature_channels: tuple[int, ...]  # channels of each feature map, shallow -> deep
    feature_strides: tuple[int, ...]  # spatial stride of each feature map w.r.t. the input

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        """Encode images B×3×H×W in [0, 1] (any H, W; cast to the encoder's dtype).

        Sizes that are not multiples of ``downscale`` are padded on the bottom/right by edge
        replication (no invented black border) and the latent is cropped back to ceil(H/d).
        """
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"expected float images B×3×H×W in [0, 1], got {tuple(images.shape)} {images.dtype}")
        height, width = images.shape[-2:]
        d = self.downscale
        pad_h, pad_w = (-height) % d, (-width) % d
        x = images.to(self.dtype)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        latent, features = self._encode_padded(x)
        return EncoderOutput(latent[..., : math.ceil(height / d), : math.ceil(width / d)], features)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Latent only: B×3×H×W in [0, 1] -> B×C×ceil(H/d)×ceil(W/d)."""
        return self(images).latent

    def _encode_padded(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError


class ImageDecoder(_Frozen):
    """Abstract frozen decoder: latent B×C×h×w -> images B×3×(d·h)×(d·w) in [0, 1] (clamped)."""

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# ----------------------------------------------------------------------------- SD AutoencoderKL


class SDVAEEncoder(ImageEncoder):
    """Encoder half of a diffusers ``AutoencoderKL`` (SD-1.x/2.x/XL VAE).

    Features (``len(down_blocks) + 1``): the output of each down block, then of the mid block.
    For the SD-1.5 VAE that is 5 maps: channels (128, 256, 512, 512, 512) at strides
    (2, 4, 8, 8, 8). Latent: the posterior mean, unscaled.
    """

    kind = "sd-vae"

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        # Hold only the encoder-side submodules so that a decoder-less load stays small.
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv  # None when the config says use_quant_conv=False
        channels = tuple(vae.config.block_out_channels)
        blocks = len(channels)
        self.latent_channels = int(vae.config.latent_channels)
        self.downscale = 2 ** (blocks - 1)  # every down block but the last halves H and W
        self.feature_channels = (*channels, channels[-1])
        self.feature_strides = (*(2 ** min(i + 1, blocks - 1) for i in range(blocks)), self.downscale)
        _freeze(self)

    @classmethod
    def from_vae(cls, vae: AutoencoderKL) -> SDVAEEncoder:
        """Wrap an existing ``AutoencoderKL`` (shares its modules and freezes them)."""
        return cls(vae)

    def _encode_padded(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # Mirrors diffusers' Encoder.forward + AutoencoderKL._encode, keeping the intermediates.
        encoder = self.encoder
        h = encoder.conv_in(images * 2 - 1)  # diffusers VAEs take [-1, 1]
        features = []
        for block in encoder.down_blocks:
            h = block(h)
            features.append(h)
        h = encoder.mid_block(h)
        features.append(h)
        moments = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(h)))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, _logvar = moments.chunk(2, dim=1)  # as DiagonalGaussianDistribution splits them
        return mean, features


class SDVAEDecoder(ImageDecoder):
    """Decoder half of an ``AutoencoderKL``: unscaled latent -> images in [0, 1]."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder
        _freeze(self)

    @classmethod
    def from_vae(cls, vae: AutoencoderKL) -> SDVAEDecoder:
        return cls(vae)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        # Same steps as AutoencoderKL._decode (without tiling), then [-1, 1] -> [0, 1].
        z = latent.to(self.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return ((self.decoder(z) + 1) / 2).clamp(0, 1)


def _load_sd_vae(source: str, subfolder: str | None, dtype: torch.dtype) -> AutoencoderKL:
    local = Path(source).expanduser()
    if subfolder is None and local.is_dir() and not (local / "config.json").exists() and (local / "vae").is_dir():
        subfolder = "vae"  # a full pipeline folder: use its VAE
    hint = (
        "Without Hub access, pass a local folder holding the VAE's config.json and "
        "diffusion_pytorch_model.safetensors (or a pipeline folder with a vae/ subfolder), "
        f"or set {KIND_ENV_VARS['sd-vae']} to it."
    )
    # Fail fast before importing diffusers (seconds): offline / unknown repo / wrong folder.
    resolve_file(local if local.exists() else source, "config.json", subfolder=subfolder, hint=hint)
    from diffusers import AutoencoderKL  # lazy: importing diffusers takes seconds

    try:
        with warnings.catch_warnings():  # diffusers passes a deprecated argument to huggingface_hub
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return AutoencoderKL.from_pretrained(str(local) if local.exists() else source, subfolder=subfolder, torch_dtype=dtype)
    except Exception as error:  # weights file missing or unreachable: the same fix for a user
        detail = str(error).splitlines()[0] if str(error) else "no detail"
        raise WeightsUnavailableError(
            f"Could not load the Stable Diffusion VAE (diffusers AutoencoderKL) from {source!r}"
            f"{f' subfolder {subfolder!r}' if subfolder else ''} ({type(error).__name__}: {detail}). {hint}"
        ) from error


# ----------------------------------------------------------------------------- TAESD family


class TinyEncoder(ImageEncoder):
    """TAESD / TAEF2 encoder. Inputs in [0, 1] directly (no [-1, 1] scaling).

    Features (4): the outputs of encoder indices 1, 5, 9, 13, i.e. the last residual block of
    each resolution stage; 64 channels each, at strides (1, 2, 4, 8).
    """

    def __init__(self, kind: taesd.TinyKind) -> None:
        super().__init__()
        self.kind = kind
        self.latent_channels = taesd.LATENT_CHANNELS[kind]
        self.net = taesd.make_encoder(self.latent_channels, group_norm=taesd.USES_GROUP_NORM[kind])
        self.feature_channels = (taesd.WIDTH,) * len(taesd.ENCODER_FEATURE_INDICES)
        self.feature_strides = (1, 2, 4, 8)
        _freeze(self)

    def _encode_padded(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, features = images, []
        for index, layer in enumerate(self.net):
            h = layer(h)
            if index in taesd.ENCODER_FEATURE_INDICES:
                features.append(h)
        return h, features


class TinyDecoder(ImageDecoder):
    """TAESD / TAEF2 decoder: latent B×C×h×w -> images B×3×8h×8w, clamped to [0, 1]."""

    def __init__(self, kind: taesd.TinyKind) -> None:
        super().__init__()
        self.kind = kind
        self.net = taesd.make_decoder(taesd.LATENT_CHANNELS[kind], group_norm=taesd.USES_GROUP_NORM[kind])
        _freeze(self)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent.to(self.dtype)).clamp(0, 1)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``.pth`` tensor dict (``weights_only``: no pickle code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, expected a dict of tensors")
    return state


def load_tiny_state_dict(module: nn.Sequential, state: dict[str, torch.Tensor], *, what: str) -> None:
    """Load ``state`` into ``module`` strictly, converting to the module's dtype.

    Raises ``ValueError`` naming the missing / unexpected keys and shape mismatches, so that a file
    of the wrong family member (or in diffusers' renamed ``AutoencoderTiny`` format) is obvious.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "") if keys else "none"

        raise ValueError(
            f"{what}: the state dict does not match the expected layout. Missing keys: {show(missing)}. "
            f"Unexpected keys: {show(unexpected)}. Wrong shapes: {show(wrong_shape)}. Expected the "
            f"original madebyollin/taesd file format (positional nn.Sequential keys such as "
            f"'1.conv.0.weight') of the same family member (taesd: 4 latent channels, taef2: 32)."
        )
    module.load_state_dict(state, strict=True)  # copy_ converts fp16 files to the module dtype


def _tiny_state_dicts(kind: taesd.TinyKind, source: str, subfolder: str | None, *, with_decoder: bool) -> tuple[dict, dict | None, str]:
    """Positional (encoder, decoder or None, where) state dicts of a tiny autoencoder.

    Two file layouts: the diffusers single file ``{kind}.safetensors`` (both halves; what the Hub's
    madebyollin/taef2 and this project's checkpoint bundles hold) and the original pair
    ``{kind}_encoder`` / ``{kind}_decoder`` (``.safetensors`` or ``.pth``). A local folder may hold
    either; a Hub repo is asked for exactly one file name per half, so a missing file is one quick
    miss, not a series of retries.
    """
    hint = f"Pass a local folder holding {kind}.safetensors (or {kind}_encoder.pth + {kind}_decoder.pth), or set {KIND_ENV_VARS[kind]} to it."
    local = Path(source).expanduser()
    if local.is_file():
        if local.name == f"{kind}.safetensors" or local.name.endswith(".safetensors") and "encoder" not in local.name:
            return _split(read_state_dict(local), with_decoder, str(local))
        local = local.parent  # an original-layout file: its pair sits beside it
    folder = local / subfolder if subfolder and (local / subfolder).is_dir() else local
    if folder.is_dir():
        single = folder / f"{kind}.safetensors"
        if single.is_file():
            return _split(read_state_dict(single), with_decoder, str(single))
        parts = [_local_part(folder, kind, part, hint) for part in (("encoder", "decoder") if with_decoder else ("encoder",))]
        return read_state_dict(parts[0]), read_state_dict(parts[1]) if with_decoder else None, str(parts[0])
    if kind == "taef2":  # the Hub repo holds the single file only
        path = resolve_file(source, f"{kind}.safetensors", subfolder=subfolder, hint=hint)
        return _split(read_state_dict(path), with_decoder, str(path))
    paths = [resolve_file(source, f"{kind}_{part}.safetensors", subfolder=subfolder, hint=hint)
             for part in (("encoder", "decoder") if with_decoder else ("encoder",))]
    return read_state_dict(paths[0]), read_state_dict(paths[1]) if with_decoder else None, str(paths[0])


def _split(state: dict[str, torch.Tensor], with_decoder: bool, where: str) -> tuple[dict, dict | None, str]:
    try:
        halves = taesd.split_single_file(state)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if with_decoder and not halves["decoder"]:
        raise ValueError(f"{where}: the file holds no decoder (keys 'decoder.layers.<i>.…'); load with with_decoder=False")
    return halves["encoder"], halves["decoder"] if with_decoder else None, where


def _local_part(folder: Path, kind: str, part: str, hint: str) -> Path:
    for extension in (".safetensors", ".pth"):
        if (folder / f"{kind}_{part}{extension}").is_file():
            return folder / f"{kind}_{part}{extension}"
    raise WeightsUnavailableError(f"No {kind}.safetensors nor {kind}_{part}.safetensors/.pth in local folder {str(folder)!r}. {hint}")


# ----------------------------------------------------------------------------- the one loader


@dataclass
class Autoencoder:
    """A frozen encoder, optionally its decoder, and where they came from."""

    encoder: ImageEncoder
    decoder: ImageDecoder | None
    kind: AutoencoderKind
    source: str

    def round_trip(self, images: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)): B×3×H×W in [0, 1] -> B×3×H×W in [0, 1] (cropped back to H×W)."""
        if self.decoder is None:
            raise ValueError("this autoencoder was loaded with with_decoder=False; reload with a decoder")
        decoded = self.decoder(self.encoder.encode(images))
        return decoded[..., : images.shape[-2], : images.shape[-1]]


def load_autoencoder(
    kind: AutoencoderKind,
    source: str | os.PathLike | None = None,
    *,
    subfolder: str | None = None,
    with_decoder: bool = True,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Autoencoder:
    """Load a frozen autoencoder of ``kind`` from a local folder or a Hugging Face Hub repo id.

    ``source``: a folder (for the tiny kinds, a file inside it also works), a Hub repo id, or None
    for :func:`fastprotect.sources.encoder_source`'s choice (environment, then the Hub default,
    with its subfolder: ``vae`` inside the SD-1.5 repo).
    Weights are converted to ``dtype`` (TAEF2 ships fp16; float32 is the default here).

    Raises ``WeightsUnavailableError`` when the files cannot be found or fetched (offline) and
    ``ValueError`` when a tiny-autoencoder file does not match the expected layout.
    """
    if kind not in AUTOENCODER_KINDS:
        raise ValueError(f"unknown autoencoder kind {kind!r}; expected one of {AUTOENCODER_KINDS}")
    if source is None:  # the one precedence rule: environment, then the Hub default
        resolved = encoder_source(kind)
        source, subfolder = resolved.location, subfolder or resolved.subfolder
    source = str(source)

    encoder: ImageEncoder
    decoder: ImageDecoder | None = None
    if kind == "sd-vae":
        vae = _load_sd_vae(source, subfolder, dtype)
        encoder = SDVAEEncoder(vae)
        decoder = SDVAEDecoder(vae) if with_decoder else None
    else:
        encoder_state, decoder_state, where = _tiny_state_dicts(kind, source, subfolder, with_decoder=with_decoder)
        encoder = TinyEncoder(kind).to(dtype)
        load_tiny_state_dict(encoder.net, encoder_state, what=f"{kind} encoder {where!r}")
        if decoder_state is not None:
            decoder = TinyDecoder(kind).to(dtype)
            load_tiny_state_dict(decoder.net, decoder_state, what=f"{kind} decoder {where!r}")

    encoder.to(device)
    if decoder is not None:
        decoder.to(device)
    if is_local(source):
        source = str(Path(source).expanduser())
    return Autoencoder(encoder=encoder, decoder=decoder, kind=kind, source=source)
