"""LPIPS (v0.1, the ``lpips`` package), frozen, as a distance and as a spatial map.

The trunk (AlexNet or VGG16 conv layers, ImageNet) comes from torchvision's download in
production, or from a local torchvision-style file (``features.{i}.weight|bias`` plus optional
LPIPS heads ``lin{k}.model.1.weight``) when the download server is unreachable: pass
``backbone=`` or set ``FASTPROTECT_LPIPS_BACKBONE`` (a file, or a folder holding
``alexnet_lpips_features.safetensors`` / ``vgg16_lpips_features.safetensors``).
Nothing is built or downloaded at import time.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from fastprotect import environment
from fastprotect.hub import WeightsUnavailableError, resolve_file

PerceptualNet = Literal["alex", "vgg"]

BACKBONE_ENV_VAR = "FASTPROTECT_LPIPS_BACKBONE"
# File names looked up when a backbone *folder* is given (the names of the LPIPS backbone files this project converts and bundles).
BACKBONE_FILENAMES: dict[PerceptualNet, str] = {
    "alex": "alexnet_lpips_features.safetensors",
    "vgg": "vgg16_lpips_features.safetensors",
}
# The ImageNet weights lpips itself asks torchvision for (``pretrained=True``).
TORCHVISION_WEIGHTS: dict[PerceptualNet, str] = {
    "alex": "AlexNet_Weights.IMAGENET1K_V1",
    "vgg": "VGG16_Weights.IMAGENET1K_V1",
}


class PerceptualDistance(nn.Module):
    """Frozen LPIPS v0.1 between images in [0, 1] (converted to [-1, 1] inside).

    Gradients flow to both inputs, never to the parameters; the module stays in eval mode.
    Inputs must be at least 32×32 (AlexNet's pooling) and have the same shape.
    """

    def __init__(self, model: nn.Module, net: PerceptualNet) -> None:
        super().__init__()
        self.net: PerceptualNet = net
        self.model = model  # an lpips.LPIPS with its trunk and heads loaded
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> PerceptualDistance:
        # A parent's .train() must not switch the heads' dropout on.
        return super().train(False)

    def _layer_maps(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer weighted squared feature differences, each B×1×H_l×W_l.

        The same steps as ``lpips.LPIPS.forward`` (v0.1: scaling layer, unit-normalised
        features, linear heads) stopped before the spatial reduction, so that the distance and
        the map come from one definition.
        """
        import lpips  # lazy: the package imports torchvision

        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected two images B×3×H×W of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        model = self.model
        dtype = model.scaling_layer.shift.dtype
        features_x = model.net(model.scaling_layer(x.to(dtype) * 2 - 1))
        features_y = model.net(model.scaling_layer(y.to(dtype) * 2 - 1))
        return [
            head((lpips.normalize_tensor(fx) - lpips.normalize_tensor(fy)).square())
            for head, fx, fy in zip(model.lins, features_x, features_y, strict=True)
        ]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance: two B×3×H×W images in [0, 1] -> B (≥ 0; about 0.1–0.8 for visible changes)."""
        return sum(layer.mean(dim=(2, 3)) for layer in self._layer_maps(x, y)).flatten()

    def spatial_map(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-pixel LPIPS: B×3×H×W in [0, 1] -> B×1×H×W (≥ 0).

        Each layer's map is upsampled bilinearly to H×W (as ``lpips`` does with ``spatial=True``)
        and the layers are summed, so the map's mean is close to (not exactly) :meth:`forward`.
        """
        size = x.shape[-2:]
        return sum(F.interpolate(layer, size=size, mode="bilinear", align_corners=False) for layer in self._layer_maps(x, y))


def _backbone_state(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """Map a torchvision-style state dict onto ``model`` (an ``lpips.LPIPS``); strict on the trunk.

    lpips splits torchvision's ``features`` into slices whose children keep their torchvision
    index as name (``net.slice2.3.weight`` is ``features.3.weight``), so the mapping is by index.
    Every trunk conv must be present. The heads ``lin{k}.model.1.weight`` are taken when the file
    has them (all or none; none keeps the heads shipped in the lpips wheel). ``classifier.*`` (a
    full torchvision checkpoint) is ignored; any other key is an error.
    """
    target = model.state_dict()
    # "net.slice2.3.weight" -> "features.3.weight"
    mapped = {"features." + ".".join(name.split(".")[2:]): name for name in target if name.startswith("net.")}
    heads = {name: name for name in target if re.match(r"lin\d+\.", name)}
    missing = sorted(set(mapped) - set(state))
    given_heads = set(heads) & set(state)
    if given_heads and given_heads != set(heads):
        missing += sorted(set(heads) - given_heads)
    unexpected = sorted(k for k in state if k not in mapped and k not in heads and not k.startswith("classifier."))
    sources = {**mapped, **{k: heads[k] for k in given_heads}}
    wrong_shape = sorted(k for k in sources if k in state and state[k].shape != target[sources[k]].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"LPIPS backbone {origin} does not fit lpips' {model.pnet_type} trunk. Missing: {missing or 'none'}. "
            f"Unexpected: {unexpected or 'none'}. Wrong shapes: {wrong_shape or 'none'}. Expected torchvision "
            f"keys 'features.{{i}}.weight|bias' for every conv (and optionally 'lin{{k}}.model.1.weight')."
        )
    loaded = {**target, **{destination: state[key] for key, destination in sources.items()}}
    # lpips registers each head twice (lin{k} and lins.{k}); give the alias the same tensor.
    for key in given_heads:
        loaded[re.sub(r"^lin(\d+)\.", r"lins.\1.", key)] = state[key]
    return loaded


def _read_backbone_file(net: PerceptualNet, backbone: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    hint = f"Pass a file or folder with the torchvision {net} features (e.g. {BACKBONE_FILENAMES[net]})."
    path = resolve_file(backbone, BACKBONE_FILENAMES[net], hint=hint)  # a file, a folder or a Hub repo
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), repr(str(path))
    return torch.load(path, map_location="cpu", weights_only=True), repr(str(path))


def _offline() -> bool:
    # No separate switch for torchvision: the project's offline flag is the Hub's.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _download_torchvision(net: PerceptualNet) -> tuple[dict[str, torch.Tensor], str]:
    """The ImageNet weights lpips would load (``pnet_rand=False``), without hanging offline."""
    from torchvision.models import get_weight

    weights = get_weight(TORCHVISION_WEIGHTS[net])
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    hint = (
        f"Pass backbone= (a local torchvision-style {net} features file or a folder holding "
        f"{BACKBONE_FILENAMES[net]}) or set {BACKBONE_ENV_VAR}, or place {cached.name} in {cached.parent}."
    )
    if not cached.exists() and _offline():
        raise WeightsUnavailableError(f"LPIPS {net} backbone not in the torch hub cache and HF_HUB_OFFLINE is set. {hint}")
    try:
        return weights.get_state_dict(progress=False, check_hash=True), weights.url
    except Exception as error:  # no network, proxy, bad download: one message for the user
        raise WeightsUnavailableError(f"Could not download the LPIPS {net} backbone from {weights.url} ({type(error).__name__}: {error}). {hint}") from error


def load_perceptual(
    net: PerceptualNet = "alex",
    backbone: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
) -> PerceptualDistance:
    """Build a frozen LPIPS v0.1 (``net`` trunk) on ``device``.

    ``backbone``: a torchvision-style weights file, a folder holding ``BACKBONE_FILENAMES[net]``,
    or a Hub repo with that file. None: ``$FASTPROTECT_LPIPS_BACKBONE`` if set, else torchvision's
    ImageNet weights (downloaded once into the torch hub cache). Raises
    ``WeightsUnavailableError`` when no weights can be had, ``ValueError`` for a file that does not
    fit the trunk.
    """
    if net not in get_args(PerceptualNet):
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {get_args(PerceptualNet)}")
    backbone = backbone if backbone is not None else environment.get(BACKBONE_ENV_VAR)
    # Read the weights first: an unavailable backbone then fails before any network is built.
    state, origin = _read_backbone_file(net, backbone) if backbone is not None else _download_torchvision(net)

    import lpips  # lazy: imports torchvision

    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        # pnet_rand: a random trunk, so torchvision downloads nothing; filled from `state` below.
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    model.load_state_dict(_backbone_state(model, state, origin), strict=True)
    return PerceptualDistance(model, net).to(device)
