"""The TAESD family of tiny autoencoders (TAESD for SD-1.5, TAEF2 for FLUX.2), original layout.

Written from the published architecture of madebyollin/taesd (MIT). Modules are plain
``nn.Sequential`` stacks so that parameter names are the positional keys of the published
``{kind}_encoder.pth`` / ``{kind}_decoder.pth`` files (``"1.conv.0.weight"``, ``"11.pool.1.bias"``,
...) and those files load with ``load_state_dict(strict=True)`` and no renaming.

Shapes (``C`` latent channels: 4 for TAESD, 32 for TAEF2)::

    encoder: B×3×H×W in [0, 1]  ->  B×C×ceil(H/8)×ceil(W/8)
    decoder: B×C×h×w            ->  B×3×8h×8w, roughly in [0, 1] (not clamped here)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

TinyKind = Literal["taesd", "taef2"]

WIDTH = 64  # every hidden layer of the family has 64 channels
LATENT_CHANNELS: dict[TinyKind, int] = {"taesd": 4, "taef2": 32}
# TAEF2 adds a GroupNorm "pooling" branch to the three deepest blocks on each side; TAESD has none.
USES_GROUP_NORM: dict[TinyKind, bool] = {"taesd": False, "taef2": True}

# Encoder indices whose outputs are the multi-layer features: the last block of each resolution
# stage, at strides 1, 2, 4 and 8, each 64 channels.
ENCODER_FEATURE_INDICES: tuple[int, ...] = (1, 5, 9, 13)


def conv(n_in: int, n_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """3×3 convolution with padding 1: keeps H×W at stride 1, gives ceil(H/2) at stride 2."""
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the latent to (-3, 3), the decoder's first layer (``tanh(x / 3) · 3``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Residual block ``relu(conv(x) + x)`` on ``n`` channels, optionally after a GN pooling branch.

    ``pool`` (TAEF2 only) is a 1×1 bottleneck through a 4-group GroupNorm added to the input
    before the residual convolutions: ``x = x + pool(x)``. Keys ``conv.0/2/4``, ``pool.0/1/3``.
    """

    def __init__(self, n: int, *, group_norm: bool = False) -> None:
        super().__init__()
        self.pool = (
            nn.Sequential(
                nn.Conv2d(n, 4 * n, 1, bias=False),
                nn.GroupNorm(4, 4 * n),
                nn.ReLU(),
                nn.Conv2d(4 * n, n, 1, bias=False),
            )
            if group_norm
            else None
        )
        self.conv = nn.Sequential(conv(n, n), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, n))
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + x)


def _blocks(count: int, *, group_norm: bool) -> list[nn.Module]:
    return [Block(WIDTH, group_norm=group_norm) for _ in range(count)]


def make_encoder(latent_channels: int, *, group_norm: bool) -> nn.Sequential:
    """Encoder, indices 0–14: stem, then three stride-2 stages, the last with GN blocks if asked.

    B×3×H×W in [0, 1] -> B×latent_channels×ceil(H/8)×ceil(W/8).
    """
    return nn.Sequential(
        conv(3, WIDTH), Block(WIDTH),  # 0, 1: full resolution
        conv(WIDTH, WIDTH, stride=2, bias=False), *_blocks(3, group_norm=False),  # 2–5: /2
        conv(WIDTH, WIDTH, stride=2, bias=False), *_blocks(3, group_norm=False),  # 6–9: /4
        conv(WIDTH, WIDTH, stride=2, bias=False), *_blocks(3, group_norm=group_norm),  # 10–13: /8
        conv(WIDTH, latent_channels),  # 14: to latent
    )  # fmt: skip


def make_decoder(latent_channels: int, *, group_norm: bool) -> nn.Sequential:
    """Decoder, indices 0–19: mirror of the encoder with nearest ×2 upsampling.

    B×latent_channels×h×w -> B×3×8h×8w, approximately in [0, 1] (callers clamp).
    """
    return nn.Sequential(
        Clamp(), conv(latent_channels, WIDTH), nn.ReLU(),  # 0–2
        *_blocks(3, group_norm=group_norm), nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False),  # 3–7
        *_blocks(3, group_norm=False), nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False),  # 8–12
        *_blocks(3, group_norm=False), nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False),  # 13–17
        Block(WIDTH), conv(WIDTH, 3),  # 18, 19
    )  # fmt: skip


# ----------------------------------------------------------------------------- file layouts
# The Hub's madebyollin/taef2 ships one file, ``taef2.safetensors``, in the layout of diffusers'
# AutoencoderTiny: keys ``encoder.layers.<i>.…`` and ``decoder.layers.<i>.…``. diffusers applies the
# decoder's clamp in ``forward`` instead of as a layer, so its decoder indices are one lower than
# the positional keys of the original ``*_decoder.pth`` files (whose layer 0 is :class:`Clamp`).
_SINGLE_FILE_PREFIXES = {"encoder": ("encoder.layers.", 0), "decoder": ("decoder.layers.", 1)}


def split_single_file(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A diffusers-layout single file -> {"encoder": positional state, "decoder": positional state}.

    Raises ``ValueError`` naming keys that belong to neither half (a file of another model)."""
    halves: dict[str, dict[str, torch.Tensor]] = {"encoder": {}, "decoder": {}}
    strays = []
    for key, tensor in state.items():
        for part, (prefix, shift) in _SINGLE_FILE_PREFIXES.items():
            if key.startswith(prefix):
                index, _, rest = key[len(prefix):].partition(".")
                if index.isdigit() and rest:
                    halves[part][f"{int(index) + shift}.{rest}"] = tensor
                    break
        else:
            strays.append(key)
    if strays or not halves["encoder"]:
        raise ValueError(f"not a tiny-autoencoder single file (diffusers layout 'encoder.layers.<i>.…'); unexpected keys: {strays[:6]}")
    return halves


def join_single_file(encoder: dict[str, torch.Tensor], decoder: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The inverse of :func:`split_single_file`: positional states -> one diffusers-layout state dict."""
    state = {}
    for part, positional in (("encoder", encoder), ("decoder", decoder or {})):
        prefix, shift = _SINGLE_FILE_PREFIXES[part]
        for key, tensor in positional.items():
            index, _, rest = key.partition(".")
            state[f"{prefix}{int(index) - shift}.{rest}"] = tensor
    return state
