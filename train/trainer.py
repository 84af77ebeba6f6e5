"""The training loop of the mixture (the method: docs/METHOD.md; the options: train.config.TrainConfig).

1. Encode every training image at ``assign_size``; fit K-means++ on the standardised descriptors
   (MixtureOfPerturbations.descriptor); store mean/std/centroids; route image i to group k_i.
2. Encode the three target patterns at ``assign_size``; store their entropy signatures; route
   image i to target t_i = argmin ‖H(E(x_i)) − H(E(y_t))‖₁ (or ``fixed_target``).
3. Adam on all perturbations with the per-sample protection loss
   ``protection_loss(E(clip(x + δ_g^t + Δ_k^t)), E(y_t))``, then ``project_()`` after every step.
Routing is computed once and saved with the optimiser state, so a resumed run is the same run.
Every snapshot and the final folder are written by ``MixtureOfPerturbations.save_pretrained`` with
the run's record, so each carries a model card (fastprotect.modelcard).
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from fastprotect.hub import is_local
from fastprotect.images import resize_tensor
from fastprotect.mixture import MIMIC_FAMILY_OF_ENCODER, MixtureConfig, MixtureOfPerturbations
from fastprotect.sources import HUB_DEFAULTS
from fastprotect.targets import entropy_signature
from fastprotect.vocabulary import TARGET_NAMES

from . import checkpoints, data
from .config import TrainConfig, TrainConfigError


def load_encoder(kind: str, source: str | None, subfolder: str | None, device: str):
    """The frozen autoencoder (encoder only). Tests monkeypatch this to prove bad runs stop earlier."""
    from fastprotect.encoders import load_autoencoder

    return load_autoencoder(kind, source, subfolder=subfolder, with_decoder=False, device=device)


def resolve_encoder(config: TrainConfig) -> tuple[str, str | None, str]:
    """(source to load, subfolder, source written into config.json)."""
    default, default_subfolder = HUB_DEFAULTS[config.encoder_kind]
    source = config.encoder_source or default
    subfolder = config.encoder_subfolder
    if subfolder is None and config.encoder_source is None:
        subfolder = default_subfolder  # "vae" inside the SD-1.5 repo
    publish = config.publish_encoder_source or (default if is_local(source) else source)
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
def fit_routing(mixture: MixtureOfPerturbations, encoder, images_u8: torch.Tensor, config: TrainConfig, device) -> dict[str, torch.Tensor]:
    """Fill descriptor_mean/std, centroids and target_signatures; return per-image targets/groups."""
    from sklearn.cluster import KMeans

    cfg = mixture.config
    latents = encode_all(encoder, images_u8, cfg.assign_size, device)
    descriptors = mixture.descriptor(latents)
    mean, std = descriptors.mean(0), descriptors.std(0).clamp_min(1e-6)
    standard = ((descriptors - mean) / std).double().numpy()
    kmeans = KMeans(n_clusters=cfg.num_groups, init="k-means++", n_init=config.kmeans_init, random_state=config.seed).fit(standard)
    mixture.descriptor_mean.copy_(mean)
    mixture.descriptor_std.copy_(std)
    mixture.centroids.copy_(torch.from_numpy(kmeans.cluster_centers_).float())
    targets_small = resize_tensor(mixture.target_images_float().to(device), cfg.assign_size, cfg.assign_size)
    signatures = entropy_signature(latents)
    mixture.target_signatures.copy_(target_anchors(signatures, entropy_signature(encoder.encode(targets_small)).cpu(), config.target_anchors))
    if config.fixed_target is not None:
        targets = torch.full((len(latents),), TARGET_NAMES.index(config.fixed_target), dtype=torch.long)
    else:
        targets = torch.cdist(signatures, mixture.target_signatures.float().cpu(), p=1).argmin(1)
    if config.no_assignment:  # ablation: a seeded random, balanced partition that ignores the content
        generator = torch.Generator().manual_seed(config.seed + 1)
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


def learning_rate(config: TrainConfig, step: int) -> float:
    """The lr after ``step`` steps: ``config.learning_rate``, cosine-decayed to 10 % over ``steps`` unless constant."""
    base = config.learning_rate
    if config.lr_schedule == "constant":
        return base
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps)))


def autocast_context(config: TrainConfig, device: torch.device):
    if device.type != "cuda" or config.precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if config.precision == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def train(config: TrainConfig) -> Path:
    """Run (or resume) training; returns the final checkpoint folder ``<output>/final``.

    ``config.preflight()`` runs first: a :class:`TrainConfigError` (bad data folder, nothing to
    resume, no Hub access for ``push_to_hub``, fewer training images than groups) is raised before
    any model is loaded.
    """
    from fastprotect.encoders import EncoderOutput
    from fastprotect.losses import encode_target, protection_loss

    config = config.preflight()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    run = config.output
    split_path = run / data.SPLIT_NAME

    # ---- data and split (before the encoder: cheap errors first)
    roots = [root.resolve() for root in config.data]
    if config.resume is not None or config.split is not None:
        source_split = split_path if config.resume is not None else config.split
        split_entries, heldout, payload = data.read_split(source_split)
        grouping = payload["grouping"]
    else:
        entries, grouping = data.scan(roots)
        split_entries, heldout = data.split(entries, heldout_fraction=config.heldout_fraction, seed=config.seed)
    train_entries = split_entries
    if config.max_train_images is not None:
        train_entries = sorted(split_entries, key=lambda e: data._rank(e.path, config.seed))[: config.max_train_images]
    if len(train_entries) < config.num_groups:
        raise TrainConfigError(f"only {len(train_entries)} training images for {config.num_groups} groups")
    run.mkdir(parents=True, exist_ok=True)
    if config.split is not None:
        shutil.copyfile(config.split, split_path)
    elif config.resume is None:
        data.write_split(split_path, roots, split_entries, heldout, grouping=grouping, seed=config.seed, heldout_fraction=config.heldout_fraction)
    images = data.load_entries(roots, train_entries, config.size)

    # ---- encoder and mixture
    source, subfolder, publish = resolve_encoder(config)
    autoencoder = load_encoder(config.encoder_kind, source, subfolder, str(device))
    encoder = autoencoder.encoder.to(device).eval().requires_grad_(False)
    with torch.no_grad():
        probe = encoder.encode(torch.zeros(1, 3, config.assign_size, config.assign_size, device=device))
    mixture_config = MixtureConfig(
        num_groups=config.num_groups, size=config.size, eta=config.eta, encoder_kind=config.encoder_kind,
        mimic_base=MIMIC_FAMILY_OF_ENCODER[config.encoder_kind], encoder_source=publish, encoder_subfolder=subfolder,
        latent_channels=probe.shape[1], assign_size=config.assign_size, feature_weight=config.feature_weight, descriptor=config.descriptor,
    )
    start_step, elapsed_before = 0, 0.0
    if config.resume is not None:
        mixture = MixtureOfPerturbations.from_pretrained(config.resume).to(device)
        state = checkpoints.load_state(config.resume)
        routing = {"targets": state["targets"], "groups": state["groups"]}
        start_step, elapsed_before = int(state["step"]), float(state["elapsed_s"])
        sampler = BatchSampler(len(images), config.batch_size, config.seed, **state["sampler"])
    else:
        mixture = MixtureOfPerturbations(mixture_config).to(device)
        routing = fit_routing(mixture, encoder, images, config, device)
        sampler = BatchSampler(len(images), config.batch_size, config.seed)
        state = None
    optimizer = torch.optim.Adam([mixture.global_perturbations, mixture.group_perturbations], lr=learning_rate(config, start_step))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    counts = torch.bincount(routing["targets"] * config.num_groups + routing["groups"], minlength=len(TARGET_NAMES) * config.num_groups)
    print(f"{len(images)} training images, {len(heldout)} held out ({grouping}); images per (target, group):\n"
          f"{counts.reshape(len(TARGET_NAMES), config.num_groups).tolist()}", flush=True)
    domains_per_group = group_domains(routing["groups"], train_entries, config.num_groups)
    print(f"domains per group: {domains_per_group}", flush=True)
    # The run's record: train_info.json and every model card (steps and wall time filled in at each save).
    record = {
        "steps": start_step, "total_steps": config.steps, "batch_size": config.batch_size, "wall_time_s": round(elapsed_before, 1),
        "hardware": hardware(), "train_images": len(images), "heldout_images": len(heldout), "grouping": grouping,
        "domains": sorted({e.domain for e in train_entries}), "counts": counts.reshape(len(TARGET_NAMES), config.num_groups).tolist(),
        "group_domains": domains_per_group, "config": config.as_record(),
    }

    # ---- targets at the training resolution, encoded once
    with torch.no_grad():
        encoded = [encode_target(encoder, mixture.target_images_float()[i : i + 1].to(device), config.size, config.size) for i in range(len(TARGET_NAMES))]
    target_latents = torch.cat([e.latent for e in encoded])
    target_features = [torch.cat([e.features[j] for e in encoded]) for j in range(len(encoded[0].features))]

    # ---- the loop
    log = (run / "log.jsonl").open("a")
    progress = None
    if config.progress:
        from tqdm import tqdm

        progress = tqdm(total=config.steps, initial=start_step, desc="train", dynamic_ncols=True)
    started = time.perf_counter()
    step = start_step
    layers = list(config.layers) if config.layers is not None else None
    for step in range(start_step + 1, config.steps + 1):
        index = sampler.next()
        x = images[index].to(device).float() / 255
        t, k = routing["targets"][index].to(device), routing["groups"][index].to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step - 1)
        with autocast_context(config, device):
            output = encoder((x + mixture.perturbation(t, k)).clamp(0, 1))
        target = EncoderOutput(latent=target_latents[t], features=[f[t] for f in target_features])
        losses = protection_loss(output, target, feature_weight=config.feature_weight, layers=layers)
        with torch.no_grad():
            latent_only = protection_loss(output, target, feature_weight=0.0)
        loss = losses.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        mixture.project_()
        elapsed = elapsed_before + time.perf_counter() - started
        entry = {"step": step, "loss": float(loss.detach()), "latent_loss": float(latent_only.mean()), "lr": optimizer.param_groups[0]["lr"],
                 "targets": t.tolist(), "groups": k.tolist(), "elapsed_s": round(elapsed, 2)}
        log.write(json.dumps(entry) + "\n")
        log.flush()
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{float(loss.detach()):.4f}", latent=f"{float(latent_only.mean()):.4f}")
        if step % config.save_every == 0 or step == config.steps or step == config.stop_at:
            record |= {"steps": step, "wall_time_s": round(elapsed, 1), "dtype": "fp32"}
            _save_checkpoint(run, mixture, optimizer, routing, sampler, step, elapsed, record)
        if step == config.stop_at:
            break
    if progress is not None:
        progress.close()
    log.close()
    elapsed = elapsed_before + time.perf_counter() - started

    # ---- final folder: fp16 (or fp32) safetensors + config + model card
    final = run / "final"
    export = MixtureOfPerturbations(mixture.config)
    export.load_state_dict(mixture.state_dict())
    if config.final_dtype == "fp16":
        export = export.half()  # floating tensors only: target_images stay uint8
    record |= {"steps": step, "wall_time_s": round(elapsed, 1), "dtype": config.final_dtype}
    export.save_pretrained(final, model_card_kwargs={"training": record})
    (run / "train_info.json").write_text(json.dumps(record, indent=1) + "\n")
    if config.push_to_hub:
        commit = export.push_to_hub(config.push_to_hub, private=config.private, commit_message="Upload FastProtect mixture",
                                    model_card_kwargs={"training": record})
        print(f"pushed to {commit}")
    return final


def _save_checkpoint(run: Path, mixture, optimizer, routing, sampler: BatchSampler, step: int, elapsed: float, record: dict) -> None:
    folder = checkpoints.checkpoint_dir(run, step)
    mixture.save_pretrained(folder, model_card_kwargs={"training": record})
    checkpoints.save_state(folder, {
        "step": step, "elapsed_s": elapsed, "optimizer": optimizer.state_dict(),
        "targets": routing["targets"].cpu(), "groups": routing["groups"].cpu(), "sampler": sampler.state(),
    })
    checkpoints.prune(run)
