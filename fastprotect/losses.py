"""The multi-layer protection loss, shared by training (train/) and refinement (pgd.py).

loss(x̂) = rel(E(x̂), E(y)) + (λ / L) Σ_l rel(F^l(x̂), F^l(y)),  rel(a, b) = ‖a − b‖² / ‖b‖².

Each term is a *relative* squared error: the latent and every feature map contribute on the same
scale whatever the encoder's channel count or activation magnitude, so λ = 1 (the default) weighs
the mean feature term like the latent term, the balance the method needs, and the same λ
transfers between the SD VAE and tiny autoencoders. Lower is a stronger pull towards the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .encoders import EncoderOutput, ImageEncoder

DEFAULT_FEATURE_WEIGHT = 1.0


def relative_squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖prediction − target‖² / ‖target‖² per sample: B×... -> B."""
    difference = (prediction.float() - target.float()).flatten(1).pow(2).sum(1)
    return difference / target.float().flatten(1).pow(2).sum(1).clamp_min(1e-12)


def protection_loss(
    output: EncoderOutput,
    target: EncoderOutput,
    *,
    feature_weight: float = DEFAULT_FEATURE_WEIGHT,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-sample loss (B) pulling ``output`` (of the protected image) towards ``target``.

    ``layers`` picks feature indices (None = all the encoder returns); ``feature_weight`` = 0 gives
    the latent-only loss of the paper's single-layer ablation. ``target`` may have batch 1.
    """
    batch = output.latent.shape[0]
    loss = relative_squared_error(output.latent, target.latent.expand_as(output.latent))
    chosen = range(len(output.features)) if layers is None else layers
    chosen = list(chosen)
    if feature_weight and chosen:
        feature_terms = [
            relative_squared_error(output.features[i], target.features[i].expand_as(output.features[i])) for i in chosen
        ]
        loss = loss + feature_weight * torch.stack(feature_terms).mean(0)
    return loss.reshape(batch)


@torch.no_grad()
def encode_target(encoder: ImageEncoder, target_image: torch.Tensor, height: int, width: int) -> EncoderOutput:
    """Encode a target pattern (1×3×S×S, [0, 1]) resized to ``height``×``width`` so that its latent
    and features line up with those of an image of that size."""
    resized = F.interpolate(target_image, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    output = encoder(resized.clamp(0, 1))
    return EncoderOutput(latent=output.latent.detach(), features=[f.detach() for f in output.features])
