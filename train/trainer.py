"""The training loop of the mixture (DESIGN.md, "Training").

1. Encode every training image at ``assign_size``; fit K-means++ on the standardised descriptors
   (MixtureOfPerturbations.descriptor); store mean/std/centroids; route image i to group k_i.
2. Encode the three target patterns at ``assign_size``; store their entropy signatures; route
   image i to target t_i = argmin ‖H(E(x_i)) − H(E(y_t))‖₁ (or ``--fixed-target``).
3. Adam on all perturbations with the per-sample protection loss
   ``protection_loss(E(clip(x + δ_g^t + Δ_k^t)), E(y_t))``, then ``project_()`` after every step.
Routing is computed once and saved with the optimiser state, so a resumed run is the same run.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from argparse import Namespace
from contextlib import nullcontext
from pathlib import Path

import torch

from fastprotect.encoders import DEFAULT_SOURCES, DEFAULT_SUBFOLDERS
from fastprotect.hub import is_local
from fastprotect.images import resize_tensor
from fastprotect.mixture import MixtureConfig, MixtureOfPerturbations
from fastprotect.targets import TARGET_NAMES, entropy_signature

from . import checkpoints, data
from .card import write_card

def load_encoder(kind: str, source: str | None, subfolder: str | None, device: str):
    """The frozen autoencoder (encoder only). Tests monkeypatch this to prove bad runs stop earlier."""
    from fastprotect.encoders import load_autoencoder

    return load_autoencoder(kind, source, subfolder=subfolder, with_decoder=False, device=device)


def resolve_encoder(args: Namespace) -> tuple[str, str | None, str]:
    """(source to load, subfolder, source written into config.json)."""
    default = DEFAULT_SOURCES[args.encoder_kind]
    source = args.encoder_source or default
    subfolder = args.encoder_subfolder
    if subfolder is None and args.encoder_source is None:
        subfolder = DEFAULT_SUBFOLDERS.get(args.encoder_kind)  # "vae" inside the SD-1.5 repo
    publish = args.publish_encoder_source or (default if is_local(source) else source)
    return source, subfolder, publish


@torch.no_grad()
def encode_all(encoder, images_u8: torch.Tensor, size: int, device, batch: int = 16) -> torch.Tensor:
    """Latents of N uint8 images resized to size²: N×C×h×w (float32, CPU)."""
    out = []
    for start in range(0, len(images_u8), batch):
        x = resize_tensor(images_u8[start : start + batch].to(device).float() / 255, size, size)
        out.append(encoder.encode(x).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def fit_routing(mixture: MixtureOfPerturbations, encoder, images_u8: torch.Tensor, args: Namespace, device) -> dict[str, torch.Tensor]:
    """Fill descriptor_mean/std, centroids and target_signatures; return per-image targets/groups."""
    from sklearn.cluster import KMeans

    cfg = mixture.config
    latents = encode_all(encoder, images_u8, cfg.assign_size, device)
    descriptors = mixture.descriptor(latents)
    mean, std = descriptors.mean(0), descriptors.std(0).clamp_min(1e-6)
    standard = ((descriptors - mean) / std).double().numpy()
    kmeans = KMeans(n_clusters=cfg.num_groups, init="k-means++", n_init=args.kmeans_init, random_state=args.seed).fit(standard)
    mixture.descriptor_mean.copy_(mean)
    mixture.descriptor_std.copy_(std)
    mixture.centroids.copy_(torch.from_numpy(kmeans.cluster_centers_).float())
    targets_small = resize_tensor(mixture.target_images_float().to(device), cfg.assign_size, cfg.assign_size)
    signatures = entropy_signature(latents)
    mixture.target_signatures.copy_(target_anchors(signatures, entropy_signature(encoder.encode(targets_small)).cpu(), args.target_anchors))
    if args.fixed_target is not None:
        targets = torch.full((len(latents),), TARGET_NAMES.index(args.fixed_target), dtype=torch.long)
    else:
        targets = torch.cdist(signatures, mixture.target_signatures.float().cpu(), p=1).argmin(1)
    if args.no_assignment:  # ablation: a seeded random, balanced partition that ignores the content
        generator = torch.Generator().manual_seed(args.seed + 1)
        groups = torch.arange(len(latents)) % cfg.num_groups
        groups = groups[torch.randperm(len(latents), generator=generator)]
    else:
        d = (descriptors - mean) / std
        groups = torch.cdist(d, mixture.centroids.float().cpu()).argmin(1)
    return {"targets": targets, "groups": groups}


def target_anchors(image_signatures: torch.Tensor, pattern_signatures: torch.Tensor, mode: str) -> torch.Tensor:
    """The T×2C signatures stored in ``target_signatures`` (inference routes by L1-nearest anchor).

    ``patterns``: H(E(y_t)) of the patterns themselves, the literal rule. Measured with TAEF2 on
    the team's 320 real images it sends *every* image to ``low`` (real images are never as
    periodic as the patterns), which leaves two thirds of the mixture untrained.
    ``images`` (default): calibrated anchors. Training images are ranked by their mean signature
    entry (overall latent entropy) and cut into terciles; anchor t is the mean signature of
    tercile t, so the smoothest third goes to the sparse ``low`` pattern and the busiest third to
    the dense ``high`` one, as the pattern order intends, and all targets get trained.
    """
    if mode == "patterns":
        return pattern_signatures
    order = image_signatures.mean(1).argsort()
    thirds = torch.tensor_split(order, len(TARGET_NAMES))
    return torch.stack([image_signatures[part].mean(0) for part in thirds])


def group_domains(groups: torch.Tensor, entries: list, num_groups: int) -> list[dict[str, int]]:
    """How many training images of each domain fell in each group: shows what K-means separated."""
    table: list[dict[str, int]] = [{} for _ in range(num_groups)]
    for group, entry in zip(groups.tolist(), entries):
        table[group][entry.domain] = table[group].get(entry.domain, 0) + 1
    return table


class BatchSampler:
    """Seeded epochs of shuffled indices; its state (epoch, position) is saved for resume."""

    def __init__(self, count: int, batch: int, seed: int, epoch: int = 0, position: int = 0) -> None:
        self.count, self.batch, self.seed, self.epoch, self.position = count, batch, seed, epoch, position

    def _order(self) -> torch.Tensor:
        return torch.randperm(self.count, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))

    def next(self) -> torch.Tensor:
        order = self._order()
        if self.position + self.batch > self.count:
            self.epoch, self.position = self.epoch + 1, 0
            order = self._order()
        chosen = order[self.position : self.position + self.batch]
        self.position += self.batch
        return chosen

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


def learning_rate(args: Namespace, step: int) -> float:
    base = args.lr if args.lr is not None else args.eta / 255 / 10
    if args.lr_schedule == "constant":
        return base
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps)))


def autocast_context(args: Namespace, device: torch.device):
    if device.type != "cuda" or args.precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if args.precision == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def train(args: Namespace) -> Path:
    """Run (or resume) training; returns the final checkpoint folder ``RUN/final``."""
    from fastprotect.losses import protection_loss, encode_target
    from fastprotect.encoders import EncoderOutput

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    run: Path = args.output
    run.mkdir(parents=True, exist_ok=True)
    split_path = run / data.SPLIT_NAME

    # ---- data and split (before the encoder: cheap errors first)
    roots = [Path(r).resolve() for r in args.data]
    if args.resume is not None or args.split is not None:
        source_split = split_path if args.resume is not None else args.split
        train_entries, heldout, payload = data.read_split(source_split)
        grouping = payload["grouping"]
        if source_split != split_path:
            shutil.copyfile(source_split, split_path)
    else:
        entries, grouping = data.scan(roots)
        train_entries, heldout = data.split(entries, heldout_fraction=args.heldout_fraction, seed=args.seed)
        data.write_split(split_path, roots, train_entries, heldout, grouping=grouping, seed=args.seed, heldout_fraction=args.heldout_fraction)
    if args.max_train_images is not None:
        train_entries = sorted(train_entries, key=lambda e: data._rank(e.path, args.seed))[: args.max_train_images]
    if len(train_entries) < args.num_groups:
        raise SystemExit(f"only {len(train_entries)} training images for {args.num_groups} groups")
    images = data.load_entries(roots, train_entries, args.size)

    # ---- encoder and mixture
    source, subfolder, publish = resolve_encoder(args)
    autoencoder = load_encoder(args.encoder_kind, source, subfolder, str(device))
    encoder = autoencoder.encoder.to(device).eval().requires_grad_(False)
    with torch.no_grad():
        probe = encoder.encode(torch.zeros(1, 3, args.assign_size, args.assign_size, device=device))
    config = MixtureConfig(
        num_groups=args.num_groups, size=args.size, eta=args.eta / 255, encoder_kind=args.encoder_kind,
        encoder_source=publish, encoder_subfolder=subfolder, latent_channels=probe.shape[1],
        assign_size=args.assign_size, feature_weight=args.feature_weight, descriptor=args.descriptor,
    )
    start_step, elapsed_before = 0, 0.0
    if args.resume is not None:
        mixture = MixtureOfPerturbations.from_pretrained(args.resume).to(device)
        state = checkpoints.load_state(args.resume)
        routing = {"targets": state["targets"], "groups": state["groups"]}
        start_step, elapsed_before = int(state["step"]), float(state["elapsed_s"])
        sampler = BatchSampler(len(images), args.batch_size, args.seed, **state["sampler"])
    else:
        mixture = MixtureOfPerturbations(config).to(device)
        routing = fit_routing(mixture, encoder, images, args, device)
        sampler = BatchSampler(len(images), args.batch_size, args.seed)
        state = None
    optimizer = torch.optim.Adam([mixture.global_perturbations, mixture.group_perturbations], lr=learning_rate(args, start_step))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    counts = torch.bincount(routing["targets"] * args.num_groups + routing["groups"], minlength=3 * args.num_groups)
    print(f"{len(images)} training images, {len(heldout)} held out ({grouping}); images per (target, group):\n"
          f"{counts.reshape(3, args.num_groups).tolist()}", flush=True)
    domains_per_group = group_domains(routing["groups"], train_entries, args.num_groups)
    print(f"domains per group: {domains_per_group}", flush=True)

    # ---- targets at the training resolution, encoded once
    with torch.no_grad():
        encoded = [encode_target(encoder, mixture.target_images_float()[i : i + 1].to(device), args.size, args.size) for i in range(3)]
    target_latents = torch.cat([e.latent for e in encoded])
    target_features = [torch.cat([e.features[j] for e in encoded]) for j in range(len(encoded[0].features))]

    # ---- the loop
    log = (run / "log.jsonl").open("a")
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        progress = tqdm(total=args.steps, initial=start_step, desc="train", dynamic_ncols=True)
    started = time.perf_counter()
    step = start_step
    for step in range(start_step + 1, args.steps + 1):
        index = sampler.next()
        x = images[index].to(device).float() / 255
        t, k = routing["targets"][index].to(device), routing["groups"][index].to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args, step - 1)
        with autocast_context(args, device):
            output = encoder((x + mixture.perturbation(t, k)).clamp(0, 1))
        target = EncoderOutput(latent=target_latents[t], features=[f[t] for f in target_features])
        losses = protection_loss(output, target, feature_weight=args.feature_weight, layers=args.layers)
        with torch.no_grad():
            latent_only = protection_loss(output, target, feature_weight=0.0)
        loss = losses.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        mixture.project_()
        elapsed = elapsed_before + time.perf_counter() - started
        record = {"step": step, "loss": float(loss.detach()), "latent_loss": float(latent_only.mean()), "lr": optimizer.param_groups[0]["lr"],
                  "targets": t.tolist(), "groups": k.tolist(), "elapsed_s": round(elapsed, 2)}
        log.write(json.dumps(record) + "\n")
        log.flush()
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{float(loss.detach()):.4f}", latent=f"{float(latent_only.mean()):.4f}")
        if step % args.save_every == 0 or step == args.steps or step == args.stop_at:
            _save_checkpoint(run, mixture, optimizer, routing, sampler, step, elapsed)
        if step == args.stop_at:
            break
    if progress is not None:
        progress.close()
    log.close()
    elapsed = elapsed_before + time.perf_counter() - started

    # ---- final folder: fp16 (or fp32) safetensors + config + model card
    final = run / "final"
    export = MixtureOfPerturbations(mixture.config)
    export.load_state_dict(mixture.state_dict())
    if args.final_dtype == "fp16":
        export = export.half()  # floating tensors only: target_images stay uint8
    export.save_pretrained(final)
    info = {
        "steps": step, "batch_size": args.batch_size, "wall_time_s": round(elapsed, 1), "hardware": hardware(), "dtype": args.final_dtype,
        "train_images": len(images), "heldout_images": len(heldout), "grouping": grouping,
        "domains": sorted({e.domain for e in train_entries}), "counts": counts.reshape(3, args.num_groups).tolist(),
        "group_domains": domains_per_group,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "data"} | {"data": [str(d) for d in args.data]},
    }
    (run / "train_info.json").write_text(json.dumps(info, indent=1) + "\n")
    write_card(final, mixture.config, info)
    if args.push_to_hub:
        from .hub import push_folder

        print(f"pushed to {push_folder(final, args.push_to_hub, private=args.private)}")
    return final


def _save_checkpoint(run: Path, mixture, optimizer, routing, sampler: BatchSampler, step: int, elapsed: float) -> None:
    folder = checkpoints.checkpoint_dir(run, step)
    mixture.save_pretrained(folder)
    checkpoints.save_state(folder, {
        "step": step, "elapsed_s": elapsed, "optimizer": optimizer.state_dict(),
        "targets": routing["targets"].cpu(), "groups": routing["groups"].cpu(), "sampler": sampler.state(),
    })
    checkpoints.prune(run)
