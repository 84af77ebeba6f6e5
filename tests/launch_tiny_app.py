"""The Space with tiny random models, for tests and the load benchmark (no download, CPU, seconds).

``build_tiny_protector()`` returns a Protector on a tiny random diffusers ``AutoencoderKL`` and a
tiny random mixture (plumbing, not protection). Run as a script to serve the app on 127.0.0.1::

    python tests/launch_tiny_app.py --port 7861 [--per-image] [--unavailable] [--lpips PATH]

The script prints ``READY http://127.0.0.1:PORT`` once the server answers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def shared_lpips_backbone() -> Path | None:
    """The real LPIPS AlexNet file in ../shared/weights, when this machine has it."""
    shared = Path(os.environ.get("FASTPROTECT_SHARED", ROOT.parent / "shared"))
    path = shared / "weights" / "alexnet_lpips_features.safetensors"
    return path if path.is_file() else None


def build_tiny_autoencoder(seed: int = 0):
    """A random 2-block AutoencoderKL (8× less downscale than SD: 2×), wrapped like SD's VAE."""
    from diffusers import AutoencoderKL

    from fastprotect.encoders import Autoencoder, SDVAEDecoder, SDVAEEncoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
            norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            sample_size=32,
        ).eval()
    return Autoencoder(SDVAEEncoder.from_vae(vae), SDVAEDecoder.from_vae(vae), kind="sd-vae", source="tiny random AutoencoderKL (tests)")


def build_tiny_mixture(seed: int = 0):
    """A random mixture: 3 targets × (global + 2 groups) of 3×32×32, each within ±η/2."""
    from fastprotect.mixture import MixtureConfig, MixtureOfPerturbations

    config = MixtureConfig(num_groups=2, size=32, latent_channels=4, assign_size=32, encoder_source="tiny")
    mixture = MixtureOfPerturbations(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        half = config.eta / 2
        mixture.global_perturbations.copy_((torch.rand(mixture.global_perturbations.shape, generator=generator) * 2 - 1) * half)
        mixture.group_perturbations.copy_((torch.rand(mixture.group_perturbations.shape, generator=generator) * 2 - 1) * half)
        mixture.centroids.copy_(torch.randn(mixture.centroids.shape, generator=generator))
        mixture.target_signatures.copy_(torch.rand(mixture.target_signatures.shape, generator=generator))
    return mixture.eval()


def build_tiny_protector(*, per_image: bool = False, lpips_backbone: str | os.PathLike | None = None):
    """A Protector on tiny random models; ``lpips_backbone``: a real LPIPS file (optional)."""
    from fastprotect.protect import Protector

    perceptual = None
    if lpips_backbone is not None:
        from fastprotect.perceptual import load_perceptual

        perceptual = load_perceptual("alex", lpips_backbone)
    notes = ["Tiny random models (tests): the output is not protected."]
    return Protector(
        build_tiny_autoencoder(), mixture=None if per_image else build_tiny_mixture(), perceptual=perceptual,
        assign_size=32, map_size=64, metrics_size=128, work_size=64, per_image_steps=3, notes=notes,
    )


def build_tiny_demo(*, per_image: bool = False, unavailable: bool = False, lpips_backbone=None, workspace=None):
    import app
    from fastprotect import space

    if workspace is not None:  # Gradio's example cache inside the app's temp space, not the repo
        os.environ["GRADIO_EXAMPLES_CACHE"] = str(workspace.root / "cached_examples")
    if unavailable:
        loaded = space.LoadOutcome(None, "WeightsUnavailableError: Could not get 'config.json' (tests: simulated offline start)")
    else:
        loaded = space.LoadOutcome(build_tiny_protector(per_image=per_image, lpips_backbone=lpips_backbone))
    demo = app.build_demo(loaded, workspace=workspace)
    return demo.queue(max_size=app.QUEUE_SIZE, default_concurrency_limit=app.CONCURRENCY_LIMIT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--per-image", action="store_true")
    parser.add_argument("--unavailable", action="store_true", help="start as if no weights could be loaded")
    parser.add_argument("--lpips", default=None, help="LPIPS AlexNet backbone file (adaptive strength); default: ../shared/weights when present")
    parser.add_argument("--no-lpips", action="store_true", help="run without LPIPS (adaptive strength off)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    import app
    from fastprotect import space

    workspace = space.Workspace()
    demo = build_tiny_demo(per_image=args.per_image, unavailable=args.unavailable, lpips_backbone=None if args.no_lpips else (args.lpips or shared_lpips_backbone()), workspace=workspace)
    demo.launch(
        server_name="127.0.0.1", server_port=args.port, prevent_thread_lock=True, max_file_size=app.MAX_FILE_SIZE,
        allowed_paths=[], quiet=True, ssr_mode=False,
    )
    print(f"READY http://127.0.0.1:{args.port}", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
