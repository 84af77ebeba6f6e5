"""Target patterns and the latent entropy signature (fastprotect.targets)."""

import torch

from fastprotect.targets import entropy_signature, target_pattern, target_patterns
from fastprotect.vocabulary import TARGET_NAMES


def test_patterns_are_deterministic_in_range_and_distinct():
    a, b = target_patterns(64), target_patterns(64)
    assert a.shape == (3, 3, 64, 64)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    for i in range(3):
        for j in range(i + 1, 3):
            assert (a[i] - a[j]).abs().mean() > 0.05, (TARGET_NAMES[i], TARGET_NAMES[j])


def test_denser_targets_have_more_high_frequency_energy():
    def high_frequency_energy(image):
        spectrum = torch.fft.rfft2(image - image.mean()).abs() ** 2
        return spectrum[..., 32:, :].sum() / spectrum.sum()

    energies = [high_frequency_energy(target_pattern(name, 256)) for name in TARGET_NAMES]
    assert energies[0] < energies[1] < energies[2]


def test_signature_shape_range_and_scale_invariance():
    latent = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    signature = entropy_signature(latent)
    assert signature.shape == (2, 8)
    assert signature.min() >= 0 and signature.max() <= 1
    assert torch.allclose(signature, entropy_signature(latent * 5 + 3), atol=1e-5)


def test_signature_separates_smooth_from_noisy_latents():
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    smooth = (x + y).expand(1, 4, 32, 32)
    noisy = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    smooth_sig, noisy_sig = entropy_signature(smooth), entropy_signature(noisy)
    assert noisy_sig[0, 4:].mean() > smooth_sig[0, 4:].mean() + 0.3  # spectral entropy
