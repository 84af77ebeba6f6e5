"""Train the perturbation generator (fastprotect.generator) against a frozen encoder.

    python -m train.generator --data ../shared/data/pool --out runs/generator [--steps 3000]

Each step: random crops of the training images (random scale, flips); δ = generator(x) (texture
budget, energy cap and the network's shrunk copy, ``--net-downscale``, inside, so the loss always sees
the admissible perturbation that inference will write); a random
transformation T, the same for x + δ and x (identity, JPEG, resize down and back, blur, small noise:
expectation over transformations, so the effect survives re-encoding and is not tuned to one exact
pixel grid; ``--jpeg-weight`` sets JPEG's share); and the loss

    pull(x̂) = rel(E(T(x̂)), E(y)) / rel(E(T(x)), E(y)) + λ · mean_l [same for feature map l]

(``rel(a, b) = ‖a − b‖²``, y the window of the target pattern under the crop, drawn over a virtual
image 1–4× the crop's side, :func:`random_window`; the generator sees the same window): how much of the way
from the clean image to the target the protected one still has to go, 1 = no effect. Dividing by
the clean image's own distance makes every image count alike, whatever its content (cartoons have
latents far from any pattern and would otherwise dominate or vanish). The decoder is never used:
optimising through a tiny distilled decoder fools it rather than the mimic (issue 10).

Ensembles (``--extra-encoder``, for transfer): the loss is the mean of each encoder's own normalised
pull (its own target latent and clean distance, so encoders with other latent spaces count alike):
``KIND=SOURCE`` loads another VAE (e.g. the SD VAE from the Hub on a machine that reaches it), a folder
loads a stand-in distilled by ``benchmarks.surrogate_encoder``. Measure transfer on an encoder that is
*not* in the ensemble (a stand-in trained with another seed and architecture is the offline option).

Snapshots (``--save-every``) hold the generator (``PerturbationGenerator.save_pretrained``) and
``state.pt`` (optimiser, step, RNG) so ``--resume`` continues the same run.

    python -m train.generator export --run RUN --output DIR [--evaluation TABLE.md]

writes a shippable checkpoint folder: the run's generator, a model card (steps, wall time, hardware
from the run's log; the evaluation table when given) and the bundled TAEF2 / LPIPS files with their
licences, copied from the bundled mixture checkpoint, so the folder works offline on its own.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from fastprotect.argparsing import OneLineArgumentParser
from fastprotect.generator import (
    GeneratorCheckpointError,
    GeneratorConfig,
    PerturbationGenerator,
)
from fastprotect.vocabulary import TARGET_NAMES, eta_from_levels, levels_from_eta

from . import data

TRANSFORMS = ("identity", "resize", "blur", "noise", "jpeg")
# JPEG carries the largest weight after identity: it is what a published image meets first, and the
# first generator (trained without it) kept only 62 % of its damage through JPEG q75 (issue 10).
TRANSFORM_WEIGHTS = (0.3, 0.2, 0.1, 0.1, 0.3)
JPEG = TRANSFORMS.index("jpeg")
JPEG_QUALITIES = (50, 95)  # uniform range of the simulated JPEG quality


def transform_weights(jpeg_weight: float | None = None) -> tuple[float, ...]:
    """TRANSFORM_WEIGHTS, or with JPEG's share set to ``jpeg_weight`` and the others scaled to fill the rest."""
    if jpeg_weight is None:
        return TRANSFORM_WEIGHTS
    if not 0 <= jpeg_weight <= 1:
        raise ValueError(f"the JPEG share must be in [0, 1], got {jpeg_weight}")
    others = sum(w for i, w in enumerate(TRANSFORM_WEIGHTS) if i != JPEG)
    return tuple(jpeg_weight if i == JPEG else w * (1 - jpeg_weight) / others for i, w in enumerate(TRANSFORM_WEIGHTS))


def random_transform(images: torch.Tensor, generator: torch.Generator,
                     weights: tuple[float, ...] = TRANSFORM_WEIGHTS) -> tuple[str, dict]:
    """Draw one transformation (name, parameters) for a batch; :func:`apply_transform` applies it."""
    pick = torch.multinomial(torch.tensor(weights), 1, generator=generator).item()
    name = TRANSFORMS[pick]
    u = float(torch.rand((), generator=generator))
    if name == "resize":
        return name, {"scale": 0.5 + 0.4 * u}
    if name == "blur":
        return name, {"sigma": 0.4 + 0.6 * u}
    if name == "noise":
        return name, {"sigma": 2 / 255, "seed": int(torch.randint(0, 2**31 - 1, (), generator=generator))}
    if name == "jpeg":
        low, high = JPEG_QUALITIES
        return name, {"quality": low + (high - low) * u}
    return name, {}


def apply_transform(images: torch.Tensor, name: str, params: dict) -> torch.Tensor:
    """Differentiable stand-ins for what happens to a published image: resize down and back
    (bilinear, antialiased), Gaussian blur, additive noise, and JPEG (kornia's differentiable codec:
    YCbCr, 4:2:0 chroma, 8×8 DCT quantised with the standard tables at the drawn quality, rounding
    smoothed so that gradients flow)."""
    if name == "resize":
        h, w = images.shape[-2:]
        small = F.interpolate(images, size=(max(8, round(h * params["scale"])), max(8, round(w * params["scale"]))),
                              mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    if name == "blur":
        sigma = params["sigma"]
        radius = max(1, math.ceil(2 * sigma))
        offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
        kernel = torch.exp(-offsets**2 / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        c = images.shape[1]
        padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
        out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    if name == "noise":
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(params["seed"])).to(images)
        return (images + noise * params["sigma"]).clamp(0, 1)
    if name == "jpeg":
        # kornia is a training-only dependency (the train extra), imported where it is used
        from kornia.enhance import jpeg_codec_differentiable

        quality = torch.full((images.shape[0],), float(params["quality"]), dtype=images.dtype, device=images.device)
        return jpeg_codec_differentiable(images, quality).clamp(0, 1)
    return images


def normalised_pull(output, clean, target, feature_weight: float) -> torch.Tensor:
    """Per-sample loss (B): remaining distance to the target, relative to the clean image's (module docstring)."""

    def rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.float() - b.float()).flatten(1).pow(2).sum(1)

    loss = rel(output.latent, target.latent.expand_as(output.latent)) / rel(clean.latent, target.latent.expand_as(clean.latent)).clamp_min(1e-12)
    if feature_weight:
        terms = [rel(o, t.expand_as(o)) / rel(c, t.expand_as(c)).clamp_min(1e-12)
                 for o, c, t in zip(output.features, clean.features, target.features, strict=True)]
        loss = loss + feature_weight * torch.stack(terms).mean(0)
    return loss


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(step: int, steps: int, base: float, schedule: str = "constant") -> float:
    """The learning rate of step ``step`` (0-based) of a ``steps``-step run. "cosine" falls from ``base`` to 0
    at the last step (half a cosine): the constant-rate runs' loss stopped falling but kept its step-to-step
    noise (docs/TRAINING.md), and a decaying rate is the usual way to settle below such a plateau (tried on the
    default's weights, 700 steps: no better on held-out images, docs/TRAINING.md). It is a
    function of the step and ``steps`` alone, so a resumed run continues the schedule without a scheduler's
    state (resumed with a larger ``--steps``, along the longer schedule from the step it stopped at)."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected one of {LR_SCHEDULES}")


def random_window(crop: int, generator: torch.Generator, largest: int = 4) -> dict:
    """Where a crop sits in a virtual image of 1–``largest`` × its side: target_window's arguments,
    so the generator meets the target pattern at every scale it will see at inference."""
    side = int(torch.randint(crop, largest * crop + 1, (), generator=generator))
    top, left = (int(torch.randint(0, side - crop + 1, (), generator=generator)) for _ in range(2))
    return {"full": (side, side), "offset": (top, left)}


def random_crops(images_u8: torch.Tensor, batch: int, crop: int, generator: torch.Generator) -> torch.Tensor:
    """B×3×crop×crop in [0, 1]: random images, each either cropped at full scale or first shrunk by
    up to 2× (scale variety), randomly flipped."""
    n, _, size, _ = images_u8.shape
    out = []
    for index in torch.randint(0, n, (batch,), generator=generator).tolist():
        image = images_u8[index : index + 1].float() / 255
        side = int(torch.randint(crop, min(size, 2 * crop) + 1, (), generator=generator))
        top, left = (int(torch.randint(0, size - side + 1, (), generator=generator)) for _ in range(2))
        patch = image[..., top : top + side, left : left + side]
        if side != crop:
            patch = F.interpolate(patch, size=(crop, crop), mode="bilinear", align_corners=False, antialias=True)
        if torch.rand((), generator=generator) < 0.5:
            patch = patch.flip(-1)
        out.append(patch)
    return (torch.cat(out).clamp(0, 1) * 255).round() / 255


def random_frame_crops(frames: list[torch.Tensor], batch: int, crop: int, generator: torch.Generator,
                       largest_scale: float = 1.25) -> tuple[torch.Tensor, list[dict]]:
    """B×3×crop×crop in [0, 1] from whole frames (``--frames``) at their own pixel scale, and each crop's
    target window (target_window's arguments) over its frame.

    At an upload of long side 512 the product runs the network on the whole frame (shrunk
    ``net_downscale``×) and draws the target pattern over the whole frame; a crop of a frame kept at
    long side 512 therefore shows the network content at the pixel scale it meets there, and the window
    is the part of *that frame's* pattern under the crop (not a virtual square). Each crop covers a square
    of side ``crop``…``largest_scale``·``crop`` (at most the frame's short side), resized to ``crop``:
    scale ≈ 1 with a little jitter; a frame shorter than ``crop`` is enlarged to fit. Randomly flipped
    (the window is flipped with it, so image and pattern stay aligned)."""
    out, windows = [], []
    for index in torch.randint(0, len(frames), (batch,), generator=generator).tolist():
        image = frames[index].unsqueeze(0).float() / 255
        height, width = image.shape[-2:]
        short = min(height, width)
        low, high = min(crop, short), min(short, round(largest_scale * crop))
        side = int(torch.randint(low, max(low, high) + 1, (), generator=generator))
        top = int(torch.randint(0, height - side + 1, (), generator=generator))
        left = int(torch.randint(0, width - side + 1, (), generator=generator))
        patch = image[..., top : top + side, left : left + side]
        if side != crop:
            patch = F.interpolate(patch, size=(crop, crop), mode="bilinear", align_corners=False, antialias=True)
        scale = crop / side  # the frame as the crop sees it
        window = {"full": (max(crop, round(height * scale)), max(crop, round(width * scale))),
                  "offset": (round(top * scale), round(left * scale)), "flip": False}
        if torch.rand((), generator=generator) < 0.5:
            patch = patch.flip(-1)
            window["flip"] = True
        out.append(patch)
        windows.append(window)
    return (torch.cat(out).clamp(0, 1) * 255).round() / 255, windows


def frame_patterns(model: PerturbationGenerator, crop: int, windows: list[dict]) -> torch.Tensor:
    """B×3×crop×crop: each crop's window of the target pattern over its frame (flipped with the crop)."""
    patterns = []
    for window in windows:
        pattern = model.target(crop, crop, full=window["full"], offset=window["offset"])
        patterns.append(pattern.flip(-1) if window["flip"] else pattern)
    return torch.cat(patterns)


def random_diversity(height: int, width: int, generator: torch.Generator, largest: float = 1.2) -> dict:
    """Parameters of one input-diversity draw (:func:`apply_diversity`): a resize by 1/``largest``…``largest``
    and a shift of up to an eighth of the side, so the encoder meets δ on another pixel grid than the one
    it was made on (off its stride-8/16 grid, at another scale)."""
    u = float(torch.rand((), generator=generator))
    scale = largest ** (2 * u - 1)
    shift = [int(torch.randint(-(side // 8), side // 8 + 1, (), generator=generator)) for side in (height, width)]
    return {"scale": scale, "shift": tuple(shift)}


def apply_diversity(images: torch.Tensor, params: dict) -> torch.Tensor:
    """Input diversity (Xie et al. 2019, "Improving transferability of adversarial examples with input
    diversity"): resize by ``scale`` (bilinear), then shift by ``shift`` pixels with reflection padding,
    the output keeping the input's size. Differentiable; applied with the same parameters to the
    protected image, the clean one and the target pattern, so their latents stay aligned and the
    normalised pull compares like with like."""
    height, width = images.shape[-2:]
    size = (max(8, round(height * params["scale"])), max(8, round(width * params["scale"])))
    resized = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=params["scale"] < 1)
    dy, dx = params["shift"]
    # pad enough on every side to take the shift and to reach the input's size, then cut the window out
    pad_h, pad_w = max(0, height - size[0]) + abs(dy), max(0, width - size[1]) + abs(dx)
    # reflection needs a pad smaller than the side; past that (a tiny input), replicate the edge
    mode = "reflect" if pad_h < size[0] and pad_w < size[1] else "replicate"
    padded = F.pad(resized, (pad_w, pad_w, pad_h, pad_h), mode=mode) if (pad_h or pad_w) else resized
    top = pad_h + (size[0] - height) // 2 - dy
    left = pad_w + (size[1] - width) // 2 - dx
    return padded[..., top : top + height, left : left + width]


def load_frames(roots: list[Path], long_side: int, cache: Path | None) -> tuple[list[torch.Tensor], list[str]]:
    """Every image under ``roots`` as a 3×H×W uint8 frame with its aspect ratio, long side ``long_side``
    (cached to ``cache`` when given; a cache of centre squares is refused, not misread)."""
    if cache is not None and cache.is_file():
        payload = torch.load(cache)
        if payload.get("kind") != "frames" or payload.get("long_side") != long_side:
            raise ValueError(f"--cache {cache} does not hold frames at long side {long_side}; give another file")
        return payload["frames"], payload["names"]
    entries, _ = data.scan(roots)
    frames = [data.load_frame(roots[e.root] / e.path, long_side) for e in entries]
    names = [f"{roots[e.root]}/{e.path}" for e in entries]
    if cache is not None:
        torch.save({"kind": "frames", "long_side": long_side, "frames": frames, "names": names}, cache)
    return frames, names


def load_images(roots: list[Path], size: int, cache: Path | None) -> tuple[torch.Tensor, list[str]]:
    """Every image under ``roots`` as N×3×size×size uint8 (cached to ``cache`` when given)."""
    if cache is not None and cache.is_file():
        payload = torch.load(cache)
        return payload["images"], payload["names"]
    entries, _ = data.scan(roots)
    images = data.load_entries(roots, entries, size)
    names = [f"{roots[e.root]}/{e.path}" for e in entries]
    if cache is not None:
        torch.save({"images": images, "names": names}, cache)
    return images, names


def load_extra_encoder(spec: str, device: str):
    """One ``--extra-encoder``: ``KIND=SOURCE`` (fastprotect.encoders.load_autoencoder's encoder) or a
    stand-in's folder (train.surrogate, distilled by benchmarks.surrogate_encoder). Raises
    FileNotFoundError / ValueError with a one-line message."""
    from fastprotect.encoders import load_autoencoder
    from fastprotect.vocabulary import AUTOENCODER_KINDS

    kind, sep, source = spec.partition("=")
    if sep and kind in AUTOENCODER_KINDS:
        return load_autoencoder(kind, source, with_decoder=False, device=device).encoder
    if sep:
        raise ValueError(f"--extra-encoder {spec}: unknown kind {kind!r}; expected one of {AUTOENCODER_KINDS} or a folder")
    from .surrogate import load_surrogate

    return load_surrogate(Path(spec)).to(device)


def ensemble_pull(encoders: list, protected_seen: torch.Tensor, clean_seen: torch.Tensor, pattern: torch.Tensor,
                  feature_weight: float) -> torch.Tensor:
    """Per-encoder mean normalised pull (E): each encoder's own target latent and clean distance, so
    encoders with other latent spaces or scales count alike; the training loss is its mean."""
    losses = []
    for encoder in encoders:
        with torch.no_grad():
            target, clean = encoder(pattern), encoder(clean_seen)
        losses.append(normalised_pull(encoder(protected_seen), clean, target, feature_weight).mean())
    return torch.stack(losses)


def grow_from(model: PerturbationGenerator, initial: PerturbationGenerator) -> None:
    """Load ``initial``'s weights into ``model``, which may have a deeper trunk (more residual blocks,
    same width): the extra blocks start as the identity (their last convolution zero), so the grown
    network writes exactly the δ of the one it starts from and training adds depth from there (a
    capacity experiment that does not throw away the training already done; docs/TRAINING.md)."""
    have, want = initial.config, model.config
    if have.width != want.width or have.blocks > want.blocks:
        raise ValueError(f"has width {have.width} and {have.blocks} blocks; it can start a network of the same width "
                         f"and at least as many blocks, not width {want.width} and {want.blocks} blocks")
    missing, unexpected = model.load_state_dict(initial.state_dict(), strict=False)
    new_blocks = range(have.blocks, want.blocks)
    new_keys = tuple(f"net.trunk.{i}." for i in new_blocks)  # the only weights the start may lack
    if unexpected or not all(key.startswith(new_keys) for key in missing):
        raise ValueError(f"does not match the network (missing {missing}, unexpected {unexpected})")
    with torch.no_grad():
        for i in new_blocks:
            model.net.trunk[i].conv2.weight.zero_()
            model.net.trunk[i].conv2.bias.zero_()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m train.generator", description=__doc__.split("\n\n")[0])
    defaults = GeneratorConfig()  # the network's and the budget's defaults are the config's, stated there once
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="image folders (never the evaluation images)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--encoder-kind", default=defaults.encoder_kind)
    parser.add_argument("--encoder-source", default=None, help="local folder or Hub id of the encoder (default: the bundled TAEF2)")
    parser.add_argument("--extra-encoder", nargs="*", default=[], metavar="SPEC",
                        help="more encoders the loss averages over (an ensemble, for transfer): KIND=SOURCE as for "
                             "--encoder-kind/--encoder-source (e.g. sd-vae=stabilityai/sd-vae-ft-mse), or a folder holding a "
                             "stand-in trained by benchmarks.surrogate_encoder")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--load-size", type=int, default=256,
                        help="images are kept as centre squares of this side (with --frames: whole frames of this long side)")
    parser.add_argument("--frames", action="store_true",
                        help="train on whole frames kept with their aspect ratio at long side --load-size (e.g. 512, the upload "
                             "size), cropped at scale ≈ 1 with each crop's window of its frame's target pattern: the scale the "
                             "product runs at, instead of shrunk centre squares")
    parser.add_argument("--input-diversity", type=float, default=0.0, metavar="P",
                        help="share of steps whose loss sees the protected image, the clean one and the target resized "
                             "(±20 %%) and shifted (reflection padding) before the encoder: input diversity, for transfer; 0 = off")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                        help="constant, or cosine: from --lr down to 0 at --steps (fine-tuning below a plateau)")
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--blocks", type=int, default=defaults.blocks)
    parser.add_argument("--eta-levels", type=int, default=levels_from_eta(defaults.eta))
    parser.add_argument("--rms-levels", type=float, default=defaults.rms_levels)
    parser.add_argument("--contrast-reference", type=float, default=defaults.contrast_reference)
    parser.add_argument("--mask-floor", type=float, default=defaults.mask_floor)
    parser.add_argument("--mask-gamma", type=float, default=defaults.mask_gamma)
    parser.add_argument("--fill-rms-levels", type=float, default=defaults.fill_rms_levels,
                        help="minimum energy (RMS levels at η): a crop whose δ stays below it gets its budget floor raised "
                             "(up to --fill-floor-max), so the network also learns flat areas; 0 = off")
    parser.add_argument("--fill-floor-max", type=float, default=defaults.fill_floor_max)
    parser.add_argument("--net-downscale", type=int, default=defaults.net_downscale,
                        help="train with the network on the crop shrunk by this factor, its pattern upsampled (the bundled "
                             "checkpoint was trained at 1 and ships at 2: `export --net-downscale 2`; training at 2 measured worse)")
    parser.add_argument("--target", choices=TARGET_NAMES, default=defaults.target)
    parser.add_argument("--feature-weight", type=float, default=1.0)
    parser.add_argument("--no-eot", action="store_true", help="train without the random transformations")
    parser.add_argument("--jpeg-weight", type=float, default=None,
                        help=f"share of steps that see JPEG (default {TRANSFORM_WEIGHTS[JPEG]:g}; the others keep their proportions)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this generator checkpoint folder's weights (fine-tuning; recorded in train_info.json); "
                             "a deeper --blocks than its own grows the trunk, the new blocks starting as the identity")
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="a .pt file to keep the decoded images in between runs")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--device", default="cpu")
    return parser


BUNDLED_FILES = ("taef2.safetensors", "alexnet_lpips_features.safetensors", "LICENSE.taef2", "LICENSE.lpips")


def export(run: Path, output: Path, *, evaluation: str | None = None, hardware: str | None = None,
           rms_levels: float | None = None, net_downscale: int | None = None, fill_rms_levels: float | None = None) -> Path:
    """The run's generator as a self-contained checkpoint folder (module docstring). ``rms_levels``,
    ``net_downscale``, ``fill_rms_levels``: ship another energy cap / shrink of the network's copy /
    minimum energy than the training ones (inference-time operating points of the same weights; the
    card says so)."""
    import shutil

    from fastprotect.bundle import bundled_checkpoint_for
    from fastprotect.modelcard import generator_card

    from .trainer import hardware as this_machine

    model = PerturbationGenerator.from_pretrained(run / "generator")
    changes = {name: value for name, value in (("rms_levels", rms_levels), ("net_downscale", net_downscale),
                                               ("fill_rms_levels", fill_rms_levels)) if value is not None}
    if changes:
        model = model.with_config(**changes)
    info = json.loads((run / "train_info.json").read_text())
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    at_step = [r for r in records if r["step"] == info["step"]]  # the log can run past the last snapshot
    info |= {"wall_time_s": at_step[-1]["elapsed_s"] if at_step else None, "hardware": hardware or this_machine()}
    card = generator_card(model.config, parameters=model.parameter_count(), training=info, evaluation=evaluation)
    model.save_pretrained(output, card=card)
    source = bundled_checkpoint_for("mixture")
    for name in BUNDLED_FILES:
        shutil.copyfile(source / name, output / name)
    return output


def export_main(argv: list[str]) -> int:
    parser = OneLineArgumentParser(prog="python -m train.generator export", description="Export a generator run as a checkpoint folder.")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--evaluation", type=Path, default=None, help="a markdown file for the card's evaluation section")
    parser.add_argument("--hardware", default=None, help="the training machine, when it is not this one")
    parser.add_argument("--rms-levels", type=float, default=None, help="ship this energy cap instead of the training one")
    parser.add_argument("--fill-rms-levels", type=float, default=None,
                        help="ship this minimum energy (RMS levels at η; 0 = off) instead of the training one")
    parser.add_argument("--net-downscale", type=int, default=None,
                        help="ship this shrink of the network's copy instead of the training one (1: full resolution)")
    args = parser.parse_args(argv)
    if args.net_downscale is not None and args.net_downscale < 1:
        parser.error("--net-downscale must be at least 1")
    evaluation = args.evaluation.read_text() if args.evaluation else None
    if args.fill_rms_levels is not None and args.fill_rms_levels < 0:
        parser.error("--fill-rms-levels must be at least 0")
    try:
        print(export(args.run, args.output, evaluation=evaluation, hardware=args.hardware, rms_levels=args.rms_levels,
                     net_downscale=args.net_downscale, fill_rms_levels=args.fill_rms_levels))
    except GeneratorCheckpointError as error:  # e.g. a minimum energy above the cap
        parser.error(str(error))
    return 0


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.crop < 32 or args.net_downscale < 1:
        parser.error("--steps, --batch and --net-downscale must be at least 1 and --crop at least 32")
    if not 0 <= args.input_diversity <= 1:
        parser.error("--input-diversity must be a share between 0 and 1")
    try:
        weights = transform_weights(args.jpeg_weight)
    except ValueError as error:
        parser.error(f"--jpeg-weight: {error}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from fastprotect.bundle import bundled_checkpoint
    from fastprotect.encoders import load_autoencoder

    source = args.encoder_source or str(bundled_checkpoint())
    encoder = load_autoencoder(args.encoder_kind, source, with_decoder=False, device=args.device).encoder
    try:
        encoders = [encoder] + [load_extra_encoder(spec, args.device) for spec in args.extra_encoder]
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    config = GeneratorConfig(
        width=args.width, blocks=args.blocks, eta=eta_from_levels(args.eta_levels), rms_levels=args.rms_levels,
        contrast_reference=args.contrast_reference, mask_floor=args.mask_floor, mask_gamma=args.mask_gamma,
        fill_rms_levels=args.fill_rms_levels, fill_floor_max=args.fill_floor_max,
        target=args.target, encoder_kind=args.encoder_kind, net_downscale=args.net_downscale,
    )
    model = PerturbationGenerator(config)
    if args.init is not None:
        initial = PerturbationGenerator.from_pretrained(args.init)
        try:
            grow_from(model, initial)
        except ValueError as error:
            parser.error(f"--init {args.init}: {error}")
    model = model.to(args.device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = torch.Generator().manual_seed(args.seed)
    step = 0
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / "state.pt"
    if args.resume and state_path.is_file():
        state = torch.load(state_path)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        rng.set_state(state["rng"])
        step = state["step"]
    try:
        if args.frames:
            frames, names = load_frames(args.data, args.load_size, args.cache)
        else:
            images, names = load_images(args.data, args.load_size, args.cache)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    log = (args.out / "log.jsonl").open("a")
    print(f"{len(names)} training images, generator {model.parameter_count():,} parameters, from step {step}", flush=True)
    # A resumed run's wall time goes on from the snapshot's (the card reports the whole run's time).
    earlier = [json.loads(line) for line in (args.out / "log.jsonl").read_text().splitlines()] if step else []
    offset = next((r["elapsed_s"] for r in reversed(earlier) if r["step"] == step), 0.0)
    started, window = time.perf_counter() - offset, []
    while step < args.steps:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.lr_schedule)
        if args.frames:
            x, windows = random_frame_crops(frames, args.batch, args.crop, rng)
            x, pattern = x.to(args.device), frame_patterns(model, args.crop, windows).to(args.device)
        else:
            x = random_crops(images, args.batch, args.crop, rng).to(args.device)
            pattern = model.target(args.crop, args.crop, **random_window(args.crop, rng)).to(args.device)
        delta = model.perturbation(x, target=pattern)
        protected = (x + delta).clamp(0, 1)
        name, params = ("identity", {}) if args.no_eot else random_transform(x, rng, weights)
        protected_seen, clean_seen = apply_transform(protected, name, params), apply_transform(x, name, params)
        # drawn only when on, so a run without it keeps the random stream (and batches) of the earlier runs
        if args.input_diversity and float(torch.rand((), generator=rng)) < args.input_diversity:
            shape = random_diversity(args.crop, args.crop, rng)
            protected_seen, clean_seen, pattern = (apply_diversity(t, shape) for t in (protected_seen, clean_seen, pattern))
        per_encoder = ensemble_pull(encoders, protected_seen, clean_seen, pattern, args.feature_weight)
        loss = per_encoder.mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        window.append(per_encoder.detach())
        if step % args.log_every == 0 or step == args.steps:
            # the JPEG share is logged per record: a resumed run may change it (the bundled run did, docs/TRAINING.md)
            means = torch.stack(window).mean(0)
            record = {"step": step, "loss": float(means.mean()), "elapsed_s": round(time.perf_counter() - started, 1),
                      "jpeg_weight": 0.0 if args.no_eot else weights[JPEG], "lr": optimiser.param_groups[0]["lr"],
                      "rms_levels": float(delta.detach().pow(2).flatten(1).mean(1).sqrt().mean() * 255)}
            if len(encoders) > 1:  # each encoder's pull: is the ensemble learning all of them or one?
                record["loss_per_encoder"] = [round(float(v), 5) for v in means]
            print(json.dumps(record), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()
            window = []
        if step % args.save_every == 0 or step == args.steps:
            model.eval()
            model.save_pretrained(args.out / "generator")
            model.train()
            torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "rng": rng.get_state(), "step": step}, state_path)
            (args.out / "train_info.json").write_text(json.dumps(
                {"config": asdict(config), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
                 | {"data": [str(d) for d in args.data]}, "step": step, "images": len(names),
                 "transforms": [] if args.no_eot else list(TRANSFORMS)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
