"""How much could group-specific perturbations gain over one universal perturbation? (first order)

``python -m train.headroom --checkpoint CKPT --data DIR --split RUN/split.json [--encoder-source W]``

A mixture can only beat a universal perturbation (UAP) if images of one group *want* a different
perturbation than the images of other groups. This measures that without training anything:

1. For every image i (training and held-out, resized and cropped like training), the gradient
   g_i = ∇_δ loss(E(x_i + δ), E(y_t)) at δ = 0 (or at the checkpoint's own perturbation with
   ``--at checkpoint``), with the checkpoint's target routing and multi-layer loss.
2. Under an L∞ budget η the best first-order step for image i alone is δ = −η·sign(g_i), which
   lowers the loss by η‖g_i‖₁. A perturbation shared by a set S of images is −η·sign(Σ_S g_j)
   and lowers image i's loss by −η⟨g_i, sign(Σ_S g_j)⟩.
3. ``captured`` = that gain / η‖g_i‖₁: the fraction of image i's own best first-order gain that
   a shared perturbation keeps (1 = as good as per-image, 0 = useless, < 0 = harmful).

Shared perturbations are built from the *training* images' gradients and scored on the held-out
images (so this is what a trained mixture could generalise to), per grouping:
``target`` (one perturbation per target: the UAP of this project), ``K-means`` (per target and
K-means group: the mixture), ``random`` (per target and a seeded random partition into as many
groups: the control that shows what merely pooling fewer images costs), ``domain`` (per target and true domain: an oracle assignment
that reads the label), and ``image`` (per image: one PGD step, the ceiling, 1 by definition).
``--fractions 0.25,0.5,1`` repeats the shared groupings with seeded subsets of the training
images: whether a gap between groupings closes as the pool grows tells whether more data (not
more steps) would let the mixture pull ahead.
If ``K-means`` and ``domain`` capture barely more than ``target``, no assignment or training can
make the mixture beat the UAP by much on this encoder, at least near δ = 0.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from . import data

GROUPINGS = ("target", "K-means", "random", "domain", "image")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.headroom", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="mixture whose routing (targets, K-means groups) and loss are used")
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--split", type=Path, required=True, help="the run's split.json: shared perturbations from 'train', scores on 'heldout'")
    p.add_argument("--encoder-source", default=None, help="local encoder weights (default: the checkpoint's encoder_source)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--at", choices=("zero", "checkpoint"), default="zero", help="expansion point: δ = 0 or the checkpoint's perturbation")
    p.add_argument("--feature-weight", type=float, default=None, help="λ of the loss (default: the checkpoint's)")
    p.add_argument("--layers", type=lambda text: [int(i) for i in text.split(",")], default=None,
                   help="comma-separated encoder feature indices for the loss (default: all)")
    p.add_argument("--max-train-per-domain", type=int, default=None, help="cap training images per domain (quick runs)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="JSON results")
    p.add_argument("--fractions", type=lambda text: [float(f) for f in text.split(",")], default=[1.0],
                   help="comma-separated fractions of the training images to build the shared directions from (1 = all)")
    p.add_argument("--cache", type=Path, default=None, help="save the gradients here, or reuse them if the file exists")
    return p


def captured_fraction(gradients: torch.Tensor, shared_direction: torch.Tensor) -> torch.Tensor:
    """Per image: ⟨g_i, sign(d_i)⟩ / ‖g_i‖₁ for N×D gradients g and N×D shared directions d.

    The step δ = −η·sign(d_i) changes image i's loss by −η⟨g_i, sign(d_i)⟩ to first order; its own
    best step (d_i = g_i) by −η‖g_i‖₁."""
    gain = (gradients * torch.sign(shared_direction)).sum(1)
    return gain / gradients.abs().sum(1).clamp_min(1e-30)


def shared_directions(train_grads: torch.Tensor, train_keys: list, held_keys: list, fallback_keys: list) -> tuple[torch.Tensor, int]:
    """Σ of the training gradients with the same key as each held-out image (N_held×D).

    A held-out key no training image has (an empty K-means cell) falls back to ``fallback_keys``
    (its target); returns how many fell back."""
    sums: dict = defaultdict(lambda: torch.zeros(train_grads.shape[1]))
    for key, g in zip(train_keys, train_grads):
        sums[key] += g
    out, fallbacks = [], 0
    for key, fallback in zip(held_keys, fallback_keys):
        if key not in sums:
            fallbacks += 1
            key = fallback
        out.append(sums[key])
    return torch.stack(out), fallbacks


def gradients(encoder, mixture, images: torch.Tensor, targets_out, at: str, batch_size: int,
              feature_weight: float, layers: list[int] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N×D flattened loss gradients w.r.t. δ, targets, groups) for N×3×S×S images in [0, 1]."""
    from fastprotect.encoders import EncoderOutput
    from fastprotect.images import resize_tensor
    from fastprotect.losses import protection_loss

    cfg = mixture.config
    grads, targets, groups = [], [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        with torch.no_grad():
            latent = encoder.encode(resize_tensor(x, cfg.assign_size, cfg.assign_size))
            t, k = mixture.select_target(latent), mixture.assign(latent)
        base = torch.zeros_like(x) if at == "zero" else resize_tensor(mixture.perturbation(t, k).detach().float(), x.shape[-2], x.shape[-1])
        delta = base.clone().requires_grad_(True)
        output = encoder((x + delta).clamp(0, 1))
        target = EncoderOutput(latent=targets_out.latent[t], features=[f[t] for f in targets_out.features])
        loss = protection_loss(output, target, feature_weight=feature_weight, layers=layers).sum()  # per-image terms: sum keeps each g_i
        (grad,) = torch.autograd.grad(loss, delta)
        grads.append(grad.flatten(1))
        targets.append(t)
        groups.append(k)
    return torch.cat(grads), torch.cat(targets), torch.cat(groups)


def run(args: argparse.Namespace) -> dict:
    from fastprotect.encoders import load_autoencoder
    from fastprotect.losses import encode_target
    from fastprotect.mixture import MixtureOfPerturbations

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train_entries, heldout, _ = data.read_split(args.split)
    if args.max_train_per_domain is not None:
        by_domain: dict[str, list[data.Entry]] = defaultdict(list)
        for entry in sorted(train_entries, key=lambda e: data._rank(e.path, 0)):
            by_domain[entry.domain].append(entry)
        train_entries = [e for members in by_domain.values() for e in members[: args.max_train_per_domain]]
    roots = [Path(r) for r in args.data]
    mixture = MixtureOfPerturbations.from_pretrained(args.checkpoint)
    cfg = mixture.config
    weight = cfg.feature_weight if args.feature_weight is None else args.feature_weight
    setting = {"checkpoint": str(args.checkpoint), "split": str(args.split), "at": args.at, "size": args.size,
               "feature_weight": weight, "layers": args.layers, "train_images": len(train_entries)}
    if args.cache is not None and args.cache.is_file():
        cached = torch.load(args.cache, map_location="cpu", weights_only=True)
        if cached["setting"] != setting:
            raise SystemExit(f"--cache {args.cache} holds gradients of another setting: {cached['setting']}")
        g_train, t_train, k_train, g_held, t_held, k_held = cached["tensors"]
    else:  # the encoder is loaded only when the gradients are not cached
        encoder = load_autoencoder(cfg.encoder_kind, args.encoder_source or cfg.encoder_source, subfolder=cfg.encoder_subfolder, with_decoder=False).encoder
        encoder = encoder.eval().requires_grad_(False)
        targets_out = encode_target(encoder, mixture.target_images_float(), args.size, args.size)

        def load(entries):
            return data.load_entries(roots, entries, args.size).float() / 255

        loss_args = (args.at, args.batch_size, weight, args.layers)
        g_train, t_train, k_train = gradients(encoder, mixture, load(train_entries), targets_out, *loss_args)
        g_held, t_held, k_held = gradients(encoder, mixture, load(heldout), targets_out, *loss_args)
        if args.cache is not None:
            torch.save({"setting": setting, "tensors": (g_train, t_train, k_train, g_held, t_held, k_held)}, args.cache)
    generator = torch.Generator().manual_seed(1)
    r_train = (torch.arange(len(train_entries)) % cfg.num_groups)[torch.randperm(len(train_entries), generator=generator)]
    r_held = torch.randint(cfg.num_groups, (len(heldout),), generator=generator)
    keys = {
        "target": (t_train.tolist(), t_held.tolist()),
        "K-means": (list(zip(t_train.tolist(), k_train.tolist())), list(zip(t_held.tolist(), k_held.tolist()))),
        "random": (list(zip(t_train.tolist(), r_train.tolist())), list(zip(t_held.tolist(), r_held.tolist()))),
        "domain": (list(zip(t_train.tolist(), [e.domain for e in train_entries])), list(zip(t_held.tolist(), [e.domain for e in heldout]))),
    }
    domains = [e.domain for e in heldout]
    results: dict = {"checkpoint": str(args.checkpoint), "at": args.at, "size": args.size, "feature_weight": weight, "layers": args.layers, "train_images": len(train_entries),
                     "heldout_images": len(heldout), "rows": {}, "fallbacks": {}}
    for fraction in sorted(args.fractions):
        # a seeded subset of the training images: how the captured fraction grows with the pool
        keep = torch.randperm(len(train_entries), generator=torch.Generator().manual_seed(2))[: round(fraction * len(train_entries))]
        for name, (train_keys, held_keys) in keys.items():
            if fraction < 1 and name == "domain":
                continue
            label = name if fraction == 1 else f"{name}, {len(keep)} training images"
            directions, fallbacks = shared_directions(g_train[keep], [train_keys[i] for i in keep.tolist()], held_keys, t_held.tolist())
            results["rows"][label] = summarise(captured_fraction(g_held, directions), domains)
            results["fallbacks"][label] = fallbacks
    results["rows"]["image"] = summarise(captured_fraction(g_held, g_held), domains)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    return results


def summarise(values: torch.Tensor, domains: list[str]) -> dict[str, float]:
    out = {d: float(values[[i for i, x in enumerate(domains) if x == d]].mean()) for d in sorted(set(domains))}
    out["all"] = float(values.mean())
    return out


def markdown(results: dict) -> str:
    columns = [c for c in next(iter(results["rows"].values())) if c != "all"] + ["all"]
    lines = [
        f"First-order headroom at δ = {'0' if results['at'] == 'zero' else 'the checkpoint perturbation'}: fraction of each held-out "
        f"image's own best L∞ step that a perturbation shared by its group keeps (shared directions from {results['train_images']} "
        f"training images, scored on {results['heldout_images']} held-out images, {results['size']}², {results['wall_s']} s).",
        "",
        "| shared by | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, row in results["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    fell = {k: v for k, v in results["fallbacks"].items() if v}
    if fell:
        lines += ["", f"Held-out images whose cell had no training image (scored with their target's direction): {fell}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.split.is_file():
        raise SystemExit(f"--split {args.split}: no such file")
    if not all(0 < f <= 1 for f in args.fractions):
        raise SystemExit("--fractions must lie in (0, 1]")
    results = run(args)
    report = markdown(results)
    print(report)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
