"""Projected gradient descent on the protection loss.

Two uses of the same code: refinement that starts from the pre-trained mixture's perturbation
(the paper's Fig. 7c), and, started from δ = 0, the per-image baseline in the style of
PhotoGuard's encoder attack and Mist: signed gradient steps that minimise the multi-layer loss,
each followed by projection onto the L∞ ball and the valid image range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .encoders import EncoderOutput, ImageEncoder
from .losses import DEFAULT_FEATURE_WEIGHT, protection_loss

ProgressCallback = Callable[[int, int], None]


def pgd_perturb(
    encoder: ImageEncoder,
    images: torch.Tensor,
    target: EncoderOutput,
    *,
    eta: float,
    steps: int,
    step_size: float | None = None,
    init: torch.Tensor | None = None,
    feature_weight: float = DEFAULT_FEATURE_WEIGHT,
    layers: Sequence[int] | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    progress: ProgressCallback | None = None,
    box: torch.Tensor | None = None,
    penalty: Callable[[torch.Tensor], torch.Tensor] | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Return δ (same shape as ``images``, B×3×H×W) with ‖δ‖∞ ≤ eta and images + δ in [0, 1].

    ``step_size`` defaults to eta / 4 from zero (coarse search) and eta / 10 when refining from
    ``init`` (small moves around a good start). ``random_start`` draws the start uniformly in the
    ball with ``generator`` (PhotoGuard's choice); the default zero start is deterministic.
    ``box``: B×1×H×W in [0, 1], a per-pixel share of the ball (e.g. a generator's texture budget):
    |δ| ≤ eta · box and every step is scaled by it, so pixels with box 0 never move.
    ``penalty``: a cost of the protected images, one value per image, added to the loss (e.g. a
    perceptual distance to the clean images: "perceptual PGD").
    ``transform``: called on the protected images before the encoder at every step (differentiable; it
    may draw a new random transformation each call): expectation over transformations ("EOT-PGD"), so
    the perturbation is optimised for what survives e.g. JPEG. The penalty still sees the untransformed images.
    """
    if steps < 0:
        raise ValueError("steps must be >= 0")
    if step_size is None:
        step_size = eta / 10 if init is not None else eta / 4
    scale = torch.ones_like(images[:, :1], dtype=torch.float32) if box is None else box.detach().float()
    bound = eta * scale
    if init is not None:
        delta = init.detach().clone().float()
    elif random_start:
        noise = torch.rand(images.shape, generator=generator, device="cpu" if generator is None else generator.device)
        delta = (noise.to(images.device) * 2 - 1) * bound
    else:
        delta = torch.zeros_like(images, dtype=torch.float32)
    delta = _project(delta, images, bound)
    for step in range(steps):
        delta.requires_grad_(True)
        protected = images + delta
        seen = protected if transform is None else transform(protected)
        loss = protection_loss(encoder(seen), target, feature_weight=feature_weight, layers=layers).sum()
        if penalty is not None:
            loss = loss + penalty(protected).sum()
        (gradient,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = _project(delta - step_size * gradient.sign() * scale, images, bound)
        if progress is not None:
            progress(step + 1, steps)
    return delta.detach()


def _project(delta: torch.Tensor, images: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Onto {δ : |δ| ≤ bound per pixel, 0 ≤ images + δ ≤ 1}."""
    return ((images + torch.clamp(delta, -bound, bound)).clamp(0, 1) - images).detach()
