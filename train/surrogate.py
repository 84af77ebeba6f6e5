"""The stand-in encoder's network and files: "an encoder you do not have", to train and measure transfer.

No second real VAE encoder is available offline, so ``python -m benchmarks.surrogate_encoder``
distils one from TAEF2: a network of a *different* architecture (GroupNorm + SiLU residual blocks
at widths 64/96/128, 4×4 strided convolutions: the SD-VAE family's style, not TAEF2's
constant-width ReLU blocks) that writes TAEF2's latent space. Two places load it: that benchmark's
transfer measurements (``noise_control --mimic-encoder``) and ``train.generator --extra-encoder``
(an ensemble). It lives here, in the training layer, so that training never imports a benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fastprotect.encoders import ImageEncoder

WEIGHTS_NAME = "surrogate_encoder.safetensors"
CONFIG_NAME = "surrogate_encoder.json"
WIDTHS = (64, 96, 128)  # one stride-2 stage each: 8× down like TAEF2
BLOCKS = 2  # residual blocks per stage
LATENT_CHANNELS = 32  # TAEF2's latent space: its decoder reads the surrogate's output


class ResidualBlock(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))): the SD-VAE family's block, unlike TAEF2's."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def make_surrogate(widths: tuple[int, ...] = WIDTHS, blocks: int = BLOCKS, latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """stem conv(3→32) → per width: 4×4 stride-2 conv, ``blocks`` residual blocks → GN, SiLU, conv → latent."""
    layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, padding=1), nn.SiLU()]
    previous = 32
    for width in widths:
        layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1)] + [ResidualBlock(width) for _ in range(blocks)]
        previous = width
    layers += [nn.GroupNorm(8, previous), nn.SiLU(), nn.Conv2d(previous, latent_channels, 3, padding=1)]
    return nn.Sequential(*layers)


class SurrogateEncoder(ImageEncoder):
    """The distilled stand-in as a frozen :class:`ImageEncoder` (features: each stage's output)."""

    kind = "taef2"  # it writes TAEF2's latent space
    latent_channels = LATENT_CHANNELS

    def __init__(self, net: nn.Sequential, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.net = net
        self.downscale = 2 ** len(widths)
        self.feature_channels = tuple(widths)
        self.feature_strides = tuple(2 ** (i + 1) for i in range(len(widths)))
        self.requires_grad_(False)
        self.eval()

    def _encode_padded(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, features = images, []
        layers = list(self.net)
        for index, layer in enumerate(layers):
            h = layer(h)
            last_of_stage = isinstance(layer, ResidualBlock) and not isinstance(layers[index + 1], ResidualBlock)
            if last_of_stage:
                features.append(h)
        return h, features


def load_surrogate(folder: Path) -> SurrogateEncoder:
    """The encoder that :func:`save_surrogate` wrote to ``folder`` (a one-line error when it is not there)."""
    config_path, weights_path = Path(folder) / CONFIG_NAME, Path(folder) / WEIGHTS_NAME
    if not (config_path.is_file() and weights_path.is_file()):
        raise FileNotFoundError(f"{folder} holds no surrogate encoder ({CONFIG_NAME} + {WEIGHTS_NAME}); "
                                "train one with python -m benchmarks.surrogate_encoder")
    config = json.loads(config_path.read_text())
    widths, blocks = tuple(config["widths"]), int(config["blocks"])
    net = make_surrogate(widths, blocks)
    net.load_state_dict(load_file(str(weights_path)))
    net.eval()
    return SurrogateEncoder(net, widths)


def save_surrogate(net: nn.Sequential, folder: Path, report: dict) -> None:
    """Write ``net`` and ``report`` (which must name its ``widths`` and ``blocks``) for :func:`load_surrogate`."""
    if not {"widths", "blocks"} <= report.keys():
        raise ValueError("the report must hold the architecture: widths and blocks")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS_NAME))
    (folder / CONFIG_NAME).write_text(json.dumps(report, indent=1, default=str) + "\n")
