"""fastprotect.pgd.pgd_perturb: the per-image attack every reference row and the --per-image path use."""

from __future__ import annotations

import pytest
import torch

from fastprotect.dummy import dummy_autoencoder
from fastprotect.losses import encode_target, protection_loss
from fastprotect.pgd import pgd_perturb

ETA = 8 / 255


@pytest.fixture(scope="module")
def setting():
    encoder = dummy_autoencoder("taesd", seed=3, with_decoder=False).encoder
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    pattern = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return encoder, images, encode_target(encoder, pattern, 32, 32)


def loss_of(encoder, images, target) -> float:
    with torch.no_grad():
        return float(protection_loss(encoder(images), target).sum())


def test_pgd_stays_in_the_ball_and_the_image_range_and_lowers_the_loss(setting) -> None:
    encoder, images, target = setting
    delta = pgd_perturb(encoder, images, target, eta=ETA, steps=4)
    assert delta.abs().max() <= ETA + 1e-6
    assert (images + delta).min() >= 0 and (images + delta).max() <= 1
    assert loss_of(encoder, images + delta, target) < loss_of(encoder, images, target)


def test_a_seeded_random_start_is_reproducible_and_differs_from_the_zero_start(setting) -> None:
    encoder, images, target = setting
    first = pgd_perturb(encoder, images, target, eta=ETA, steps=1, random_start=True, generator=torch.Generator().manual_seed(5))
    again = pgd_perturb(encoder, images, target, eta=ETA, steps=1, random_start=True, generator=torch.Generator().manual_seed(5))
    zero = pgd_perturb(encoder, images, target, eta=ETA, steps=1)
    assert torch.equal(first, again) and not torch.equal(first, zero)


def test_a_box_bounds_every_pixel_and_pixels_outside_it_never_move(setting) -> None:
    encoder, images, target = setting
    box = torch.ones_like(images[:, :1])
    box[..., :16, :] = 0.0  # top half: no budget
    box[..., 16:, :16] = 0.25  # bottom left: a quarter of the ball
    delta = pgd_perturb(encoder, images, target, eta=ETA, steps=4, random_start=True,
                        generator=torch.Generator().manual_seed(0), box=box)
    assert delta[..., :16, :].abs().max() == 0
    assert delta[..., 16:, :16].abs().max() <= ETA / 4 + 1e-6
    assert delta[..., 16:, 16:].abs().max() > ETA / 2  # the full-budget quarter uses the ball


def test_a_penalty_on_the_protected_images_is_minimised_with_the_loss(setting) -> None:
    encoder, images, target = setting

    def stay_close(protected: torch.Tensor) -> torch.Tensor:  # a stand-in for a perceptual distance to the clean image
        return 1e4 * (protected - images).abs().flatten(1).mean(1)

    free = pgd_perturb(encoder, images, target, eta=ETA, steps=4)
    penalised = pgd_perturb(encoder, images, target, eta=ETA, steps=4, penalty=stay_close)
    assert penalised.abs().mean() < 0.5 * free.abs().mean()


def test_eot_pgd_optimises_through_the_transform_it_is_given(setting) -> None:
    """With a transform, the encoder sees transform(x + δ): a transform that discards the input
    leaves no gradient (δ stays at its start), and an identity transform is plain PGD exactly."""
    encoder, images, target = setting
    plain = pgd_perturb(encoder, images, target, eta=ETA, steps=2)
    assert torch.equal(pgd_perturb(encoder, images, target, eta=ETA, steps=2, transform=lambda x: x), plain)
    calls = []

    def blind(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x * 0 + 0.5

    frozen = pgd_perturb(encoder, images, target, eta=ETA, steps=3, transform=blind)
    assert len(calls) == 3 and torch.equal(frozen, torch.zeros_like(images))
