"""Protection vs random noise of the same energy, with every visibility measure (issue 10's protocol).

    python -m benchmarks.noise_control [--per-domain 4] [--offset 0] [--sample heldout|dev] [--size 256] [--rows generator mixture noise pgd]

For held-out images of the bundled checkpoints' evaluation (checkpoints/taef2-mixture/eval.json's
list, the first ``--per-domain`` of each domain; the generator never saw any image of that folder,
it was trained on ../shared/data/pool) cropped to centre squares at ``--size``², and each method
row, prints LPIPS-alex, LPIPS-VGG, PSNR, the flat-region energy ratio, the mimic damage (TAEF2 round
trip, ``fastprotect.evaluation``), the damage of random noise with the same energy
(``fastprotect.evaluation.matched_noise``), their ratio (pooled and per domain), the pull, and the
share of the damage that survives JPEG q75 and resize-half (robustness).

Row groups (``--rows``):
* ``noise``: random ±4 and ±8 sign noise, the ratio's sanity check (≈ 1);
* ``generator``: the bundled generator (the default) over ``--generator-etas`` (its η-curve; 4, 6, 8, 12);
* ``mixture``: the paper's mixture with adaptive strength over η 4, 8, 12, and times a texture
  mask after the fact (the negative result kept from the first study);
* ``ablation``: the default generator at η 8 with one part taken away at inference (the texture
  budget: floor 1, i.e. uniform; the energy cap; the minimum energy, its colour-only form and the shrunk copy the
  network runs on, when it has them), each ``--budget-variants FLOOR:CAP`` operating point
  of the same network, and every ``--compare LABEL=FOLDER`` generator
  (a training ablation: another run's export) at η 8;
* ``pgd``: per-image references, 8 steps from a random start: plain PGD on the protection loss over
  ``--pgd-etas`` (4 and 8), the same under the generator's texture budget and energy cap (what per-image
  optimisation reaches under the generator's rules: its upper reference), and "perceptual PGD" (the same loss + ``PERCEPTUAL_WEIGHT`` · LPIPS-VGG(x̂, x), the judge's
  other network, so that it is not tuned against the AlexNet LPIPS it is also scored with);
* ``eot``: "EOT-PGD" at η 4 and 8: plain PGD with the differentiable JPEG in half of its steps, as the
  generator trains (the per-image reference for robustness).
``--mimic-encoder DIR`` scores every row through another encoder (``benchmarks.surrogate_encoder``: a
network of another architecture distilled from TAEF2, read by TAEF2's decoder) while every
protection is still made against TAEF2: transfer. Its rows go to their own ``--out`` by default.
Needs the real weights (LPIPS VGG) from ``--weights``. The results file keeps every row's per-image values
(``per_image``, in the order of ``images``): ``python -m benchmarks.intervals`` draws bootstrap intervals from them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.common import (
    DEFAULT_IMAGES,
    DEFAULT_WEIGHTS,
    centre_square,
    machine_info,
    machine_line,
    write_json,
)
from benchmarks.surrogate_encoder import mimic_autoencoder
from fastprotect.bundle import bundled_checkpoint
from fastprotect.evaluation import (
    Harness,
    local_contrast,
    matched_noise,
    summarise,
    transform,
)
from fastprotect.generator import (
    FILL_FORM_COMPONENTS,
    FILL_FORM_NAMES,
    FILL_FORMS,
    PerturbationGenerator,
    cap_energy,
)
from fastprotect.images import load_image
from fastprotect.losses import encode_target
from fastprotect.perceptual import load_perceptual
from fastprotect.pgd import pgd_perturb
from fastprotect.protect import Protector
from fastprotect.strength import quantise_within_budget
from fastprotect.vocabulary import TARGET_NAMES, eta_from_levels, is_image_name
from train.surrogate import load_surrogate

DOMAINS = ("cartoon", "face", "object", "painting")
ROW_GROUPS = ("noise", "generator", "mixture", "ablation", "pgd", "pgd-budget", "eot")
GENERATOR_ETAS = (4, 6, 8, 12)
EOT_ETAS = (4, 8)  # EOT-PGD: plain PGD with JPEG in its loop, the per-image reference for robustness
PGD_ETAS = (4, 8)  # plain PGD's η-curve; more points (--pgd-etas 2 3 4 6 8) draw its frontier (benchmarks.frontier)
# PGD held to the generator's texture budget (box ±η·m, no energy cap): a per-image curve that keeps issue 10's
# flat-region rule (ratio ≤ 0.5) like the default does; its η reach the generator's visibility range
PGD_BUDGET_ETAS = (4, 8, 16, 24)
MIXTURE_ETAS = (4, 8, 12)
MASKED = ((8, 1.0, 0.2), (12, 1.0, 0.1))  # (η levels, γ, floor) of the mixture × texture-mask rows
ROBUSTNESS = ("jpeg75", "resize-half")
PGD_STEPS = 8
# the minimum energy's other forms, each an ablation row when the checkpoint has one (fastprotect.generator.FILL_FORMS)
FILL_FORM_WORDS = {form: f"{FILL_FORM_NAMES[form]} ({FILL_FORM_COMPONENTS[form]})" if FILL_FORM_COMPONENTS[form] else FILL_FORM_NAMES[form]
                   for form in FILL_FORMS}  # the ablation rows' words (keys of committed results)
DEFAULT_OUT = Path("benchmarks/results/noise_control_cpu_taef2.json")
TRANSFER_OUT = Path("benchmarks/results/noise_control_transfer_surrogate.json")
PERCEPTUAL_WEIGHT = 2.0  # λ of perceptual PGD: loss + λ · LPIPS-VGG(x̂, x)


def sample_names(sample: str, images: Path, per_domain: int, offset: int = 0) -> list[str]:
    """The evaluated images, ``per_domain`` of each domain from the ``offset``-th on.

    ``heldout``: the bundled mixture's held-out list (its eval.json), which no method here trained on;
    ``dev``: every image of ``images`` in name order — held out for the generator (trained on
    ../shared/data/pool) but not for the mixture, so only for the generator's rows."""
    if sample == "heldout":
        listed = json.loads((bundled_checkpoint("taef2-mixture") / "eval.json").read_text())["images"]
    else:
        listed = [f"{d}/{path.name}" for d in DOMAINS for path in sorted((images / d).iterdir()) if is_image_name(path.name)]
    return [n for d in DOMAINS for n in [m for m in listed if m.startswith(d + "/")][offset : offset + per_domain]]


def texture_mask(images: torch.Tensor, gamma: float, floor: float, reference: float) -> torch.Tensor:
    """Per-pixel budget scale in [floor, 1]: (local contrast / the set's median) ** gamma, clipped."""
    return (local_contrast(images) / reference).pow(gamma).clamp(floor, 1.0)[:, None]


def protect_all(protector: Protector, images: torch.Tensor, eta: float, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Every image through ``protector`` (one at a time, as the CLI does); the mean seconds per image."""
    out, started = [], time.perf_counter()
    for i in range(len(images)):
        x = images[i : i + 1]
        result = protector.protect(x, eta=eta, compute_metrics=False).image
        if mask is not None:
            result = quantise_within_budget(x, (x + (result - x) * mask[i : i + 1]).clamp(0, 1), eta)
        out.append(result)
    return torch.cat(out), (time.perf_counter() - started) / len(images)


def generator_variant(protector: Protector, **changes) -> Protector:
    """A copy of a generator ``protector`` whose generator has ``changes`` in its config, same weights."""
    return Protector(protector.autoencoder, generator=protector.generator.with_config(**changes), perceptual=protector.perceptual)


def parse_compare(text: str) -> tuple[str, Path]:
    label, _, folder = text.partition("=")
    if not label or not folder:
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER, got {text!r}")
    return label, Path(folder)


def parse_variant(text: str) -> tuple[float, float]:
    floor, _, cap = text.partition(":")
    try:
        return float(floor), float(cap)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FLOOR:CAP (e.g. 0.2:3.0), got {text!r}") from None


def pgd_label(levels: int) -> str:
    return f"per-image PGD, {PGD_STEPS} steps, η {levels}"


def pgd_budget_label(levels: int) -> str:
    return f"per-image PGD in the generator's texture budget (no cap), {PGD_STEPS} steps, η {levels}"


def variant_label(floor: float, cap: float) -> str:
    return f"generator η 8 with texture-budget floor {floor:g} and energy cap {cap:g} (same network)"


def jpeg_half_the_time(seed: int = 0):
    """EOT-PGD's transformation: at each call, with probability 1/2, the differentiable JPEG the generator trains
    with (train.generator.apply_transform, quality uniform in its JPEG_QUALITIES), else the identity — the same
    JPEG share (0.5) as the default generator's last training stage. Seeded: the same draws every run."""
    from train.generator import JPEG_QUALITIES, apply_transform

    draws = torch.Generator().manual_seed(seed)
    low, high = JPEG_QUALITIES

    def transform(images: torch.Tensor) -> torch.Tensor:
        u, quality = torch.rand(2, generator=draws).tolist()
        return apply_transform(images, "jpeg", {"quality": low + (high - low) * quality}) if u < 0.5 else images

    return transform


def per_image_pgd(protector: Protector, images: torch.Tensor, eta: float, *, perceptual=None, weight: float = 0.0,
                  budget=None, cap: bool = True, steps: int = PGD_STEPS, seed: int = 0,
                  eot: bool = False) -> tuple[torch.Tensor, float]:
    """The library's PGD (``fastprotect.pgd.pgd_perturb``) towards the "mid" target, one image at a time:
    signed steps of η/4 from a seeded uniform start, + ``weight`` · perceptual(x̂, x) when given; 8-bit output.
    ``budget``: a PerturbationGenerator whose texture budget (the box ±η·m, steps scaled by m) and
    energy cap (applied at the end; ``cap=False``: not applied) bound the search: per-image optimisation under the
    generator's rules.
    ``eot``: each step's loss is taken through :func:`jpeg_half_the_time` (EOT-PGD)."""
    encoder = protector.encoder
    target_image = protector.target_images[TARGET_NAMES.index("mid") : TARGET_NAMES.index("mid") + 1]
    out, started = [], time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    for i in range(len(images)):
        x = images[i : i + 1]
        target = encode_target(encoder, target_image, *x.shape[-2:])
        penalty = None if perceptual is None else (lambda protected, x=x: weight * perceptual(protected, x).flatten())
        delta = pgd_perturb(encoder, x, target, eta=eta, steps=steps, random_start=True, generator=generator,
                            box=None if budget is None else budget.budget(x), penalty=penalty,
                            transform=jpeg_half_the_time(seed + i) if eot else None)
        if budget is not None and cap:
            delta = cap_energy(delta, budget.config.rms_levels / 255 * eta / budget.config.eta)
        out.append(quantise_within_budget(x, (x + delta).clamp(0, 1), eta))
    return torch.cat(out), (time.perf_counter() - started) / len(images)


def same_energy_noise(images: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """The row's control: random noise with each image's protection energy (seeded, so every mimic sees the same)."""
    return matched_noise(images, protected, torch.Generator().manual_seed(0))


VISIBILITY = ("lpips", "lpips_vgg", "psnr", "flat_ratio")  # per-image measures that do not depend on the mimic


def measure_per_image(harness: Harness, images: torch.Tensor, protected: torch.Tensor, targets: torch.Tensor,
                      robust: bool, noise: torch.Tensor | None = None,
                      visibility: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Every measure of one row, per image (name -> B): visibility, damage, same-PSNR noise damage, and the
    damage left after each of ROBUSTNESS when ``robust``. Kept in the results file (``per_image``) so that
    intervals can be drawn later (benchmarks.intervals) without measuring again. ``noise``: the row's
    :func:`same_energy_noise` when the caller already drew it (it depends on the images only, not the mimic);
    ``visibility``: the VISIBILITY measures of ``protected`` when another mimic's board already has them."""
    if visibility is None:
        visibility = harness.invisibility(images, protected)
    per_image = {key: visibility[key] for key in VISIBILITY} | {
        key: value for key, value in harness.efficacy(images, protected, targets).items() if key in ("damage", "pull")}
    noise = same_energy_noise(images, protected) if noise is None else noise
    per_image["noise_damage"] = harness.efficacy(images, noise, targets)["damage"]  # the control's visibility is not reported
    if robust:
        for name in ROBUSTNESS:
            seen = transform(protected, name, torch.Generator().manual_seed(1))
            seen_clean = transform(images, name, torch.Generator().manual_seed(1))
            per_image[f"damage_{name}"] = harness.efficacy(images, seen, targets, seen_clean=seen_clean)["damage"]
    return per_image


def summarise_row(per_image: dict[str, torch.Tensor], domains: list[str]) -> dict[str, dict]:
    """One table row from :func:`measure_per_image`'s values, pooled ("all") and per domain: means, the ratio
    of mean damage to mean same-PSNR noise damage, and the share of the damage each transformation leaves."""
    summary = summarise(per_image, domains)
    row = {domain: {**values, "ratio": values["damage"] / max(values["noise_damage"], 1e-6)} for domain, values in summary.items()}
    for values in row.values():
        for name in ROBUSTNESS:
            if f"damage_{name}" in values:
                values[f"survives_{name}"] = values[f"damage_{name}"] / max(values["damage"], 1e-6)
    return row


@dataclass
class Board:
    """Where one mimic's scores go: its harness, its results file (rows kept from earlier runs) and its name."""

    harness: Harness
    out: Path
    mimic: str
    rows: dict[str, dict] = field(default_factory=dict)
    per_image: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # label -> measure -> one value per image

    def __post_init__(self) -> None:
        earlier = json.loads(self.out.read_text()) if self.out.is_file() else {}
        self.previous, self.previous_per_image = earlier.get("rows", {}), earlier.get("per_image", {})
        self.previous_images = earlier.get("images")

    def add(self, label: str, per_image: dict[str, torch.Tensor], domains: list[str]) -> dict[str, dict]:
        """Summarise one row's per-image values, keep both (the row and its values), return the row."""
        self.rows[label] = summarise_row(per_image, domains)
        self.per_image[label] = {key: [round(float(v), 6) for v in values.cpu()] for key, values in per_image.items()}
        return self.rows[label]

    def write(self, info: dict, names: list[str], size: int) -> None:
        # per_image's lists follow "images"; a row kept from a run on other images keeps no per-image values
        kept = self.previous_per_image if self.previous_images == names else {}
        write_json(self.out, {"machine": info, "mimic": self.mimic, "images": names, "size": size, "rows": self.previous | self.rows,
                              "per_image": kept | self.per_image})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.noise_control", description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-domain", type=int, default=4)
    parser.add_argument("--sample", choices=("heldout", "dev"), default="heldout",
                        help="heldout: the mixture's held-out list (every row); dev: all of --images in name order (generator rows only)")
    parser.add_argument("--offset", type=int, default=0,
                        help="skip the first OFFSET images of each domain (a second, disjoint sample: --offset 4)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rows", nargs="+", choices=ROW_GROUPS, default=list(ROW_GROUPS))
    parser.add_argument("--generator", type=Path, default=bundled_checkpoint("taef2-generator"), help="generator checkpoint folder")
    parser.add_argument("--mixture", type=Path, default=bundled_checkpoint("taef2-mixture"), help="mixture checkpoint folder")
    parser.add_argument("--generator-etas", type=int, nargs="+", default=list(GENERATOR_ETAS), help="η levels of the generator rows")
    parser.add_argument("--pgd-etas", type=int, nargs="+", default=list(PGD_ETAS), help="η levels of the plain per-image PGD rows")
    parser.add_argument("--pgd-budget-etas", type=int, nargs="+", default=list(PGD_BUDGET_ETAS),
                        help="η levels of the rows of PGD in the generator's texture budget (--rows pgd-budget)")
    parser.add_argument("--compare", type=parse_compare, nargs="*", default=[], metavar="LABEL=FOLDER",
                        help="more generator checkpoints for the ablation rows (other training runs)")
    parser.add_argument("--budget-variants", type=parse_variant, nargs="*", default=[], metavar="FLOOR:CAP",
                        help="more ablation rows: the default generator with this texture-budget floor and energy cap (levels at η 8)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--mimic-encoder", type=Path, default=None, metavar="DIR",
                        help="also score every row through this surrogate encoder (benchmarks.surrogate_encoder): transfer")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (rows scored through TAEF2)")
    parser.add_argument("--transfer-out", type=Path, default=TRANSFER_OUT, help="results file of the rows scored through --mimic-encoder")
    parser.add_argument("--table-only", action="store_true", help="print the table of the rows already in --out and exit")
    args = parser.parse_args(argv)
    if args.table_only:
        print("\n".join(row_line(label, row) for label, row in json.loads(args.out.read_text())["rows"].items()))
        return 0
    if args.sample == "dev" and set(args.rows) & {"mixture", "pgd", "pgd-budget", "eot"}:
        parser.error("--sample dev holds the mixture's training images: use it with --rows noise generator ablation only")
    names = sample_names(args.sample, args.images, args.per_domain, args.offset)
    domains = [name.split("/")[0] for name in names]
    images = torch.cat([centre_square(load_image(args.images / name).pixels, args.size) for name in names])
    mixture = Protector.from_pretrained(args.mixture)
    vgg = load_perceptual("vgg", args.weights / "vgg16_lpips_features.safetensors")
    targets = torch.full((len(images),), TARGET_NAMES.index("mid"), dtype=torch.long)  # damage does not depend on it
    info = machine_info("cpu")
    boards = [Board(Harness(mixture.autoencoder, mixture.perceptual, mixture.target_images, perceptual_vgg=vgg, extended=True),
                    args.out, "TAEF2 (the encoder every protection here is made against)")]
    if args.mimic_encoder is not None:
        surrogate = mimic_autoencoder(load_surrogate(args.mimic_encoder), mixture.autoencoder)
        boards.append(Board(Harness(surrogate, mixture.perceptual, mixture.target_images, perceptual_vgg=vgg, extended=True),
                            args.transfer_out, f"surrogate encoder {args.mimic_encoder} + TAEF2 decoder (protections made against TAEF2)"))
    # every other checkpoint is loaded before the first row, so a bad folder fails in seconds, not after the rows
    compared = [(label, Protector.from_pretrained(folder)) for label, folder in args.compare] if "ablation" in args.rows else []

    def score(label: str, protected: torch.Tensor, seconds: float | None = None, robust: bool = False) -> None:
        on_taef2 = None  # boards[0] scores through TAEF2; the others show their damage as a share of it
        noise = same_energy_noise(images, protected)  # drawn once: every mimic scores the same control
        visibility = None  # measured once: it does not depend on the mimic
        for board in boards:
            per_image = measure_per_image(board.harness, images, protected, targets, robust, noise, visibility)
            visibility = {key: per_image[key] for key in VISIBILITY}
            row = board.add(label, per_image, domains)
            row["all"]["seconds_per_image"] = seconds
            if on_taef2 is None:
                on_taef2 = row["all"]["damage"]
            else:  # the same protected images, scored through the surrogate: transfer
                row["all"]["transfer"] = row["all"]["damage"] / max(on_taef2, 1e-6)
            print(row_line(label if board is boards[0] else f"{label} [through the surrogate]", row), flush=True)
            # written after every row: a failure late in a long run keeps the rows already measured
            board.write(info, names, args.size)

    if "noise" in args.rows:
        for levels in (4, 8):
            signs = torch.randint(0, 2, images.shape, generator=torch.Generator().manual_seed(levels)).float() * 2 - 1
            score(f"random ±{levels} sign noise", (images + signs * levels / 255).clamp(0, 1))
    if "generator" in args.rows:
        generator = Protector.from_pretrained(args.generator)
        for levels in args.generator_etas:
            label = f"generator η {levels}" + (" (default)" if levels == 8 else "")
            score(label, *protect_all(generator, images, eta_from_levels(levels)), robust=True)
    if "mixture" in args.rows:
        for levels in MIXTURE_ETAS:
            score(f"mixture, adaptive strength, η {levels}", *protect_all(mixture, images, eta_from_levels(levels)), robust=levels in (4, 8))
        reference = float(local_contrast(images).median())
        for levels, gamma, floor in MASKED:
            mask = texture_mask(images, gamma, floor, reference)
            score(f"mixture η {levels} × texture mask (γ {gamma:g}, floor {floor:g})", *protect_all(mixture, images, eta_from_levels(levels), mask))
    if "ablation" in args.rows:
        default = Protector.from_pretrained(args.generator)
        eta = eta_from_levels(8)
        score("generator η 8 without its texture budget (uniform: floor 1; same network and cap)",
              *protect_all(generator_variant(default, mask_floor=1.0), images, eta), robust=True)
        score("generator η 8 without its energy cap (same network and budget)",
              *protect_all(generator_variant(default, rms_levels=255.0), images, eta), robust=True)
        if default.generator.config.fill_rms_levels > 0:
            score("generator η 8 without its minimum energy (the fixed floor on every image; same network, budget and cap)",
                  *protect_all(generator_variant(default, fill_rms_levels=0.0), images, eta), robust=True)
            if default.generator.config.fill_block == 0:
                score("generator η 8 with its minimum energy in 8-px squares (fill_block 8: constant over JPEG's 8×8 blocks; "
                      "same network, budget and cap)",
                      *protect_all(generator_variant(default, fill_block=8), images, eta), robust=True)
            for form, words in FILL_FORM_WORDS.items():
                if form != default.generator.config.fill_form:
                    score(f"generator η 8 with its minimum energy in {words} (fill_form {form}; same network, budget and cap)",
                          *protect_all(generator_variant(default, fill_form=form), images, eta), robust=True)
        if default.generator.config.net_downscale > 1:
            score("generator η 8 with its network at full resolution (net_downscale 1; same weights, budget and cap)",
                  *protect_all(generator_variant(default, net_downscale=1), images, eta), robust=True)
        for floor, cap in args.budget_variants:
            score(variant_label(floor, cap), *protect_all(generator_variant(default, mask_floor=floor, rms_levels=cap), images, eta),
                  robust=True)
        for label, other in compared:
            score(f"{label}, η 8", *protect_all(other, images, eta), robust=True)
    # the texture budget both PGD row groups search in, read once
    budget = PerturbationGenerator.from_pretrained(args.generator) if {"pgd", "pgd-budget"} & set(args.rows) else None
    if "pgd" in args.rows:
        for levels in args.pgd_etas:
            score(pgd_label(levels), *per_image_pgd(mixture, images, eta_from_levels(levels)), robust=True)
        score(f"per-image PGD under the generator's texture budget and cap, {PGD_STEPS} steps, η 8",
              *per_image_pgd(mixture, images, eta_from_levels(8), budget=budget), robust=True)
        score(f"perceptual PGD (+{PERCEPTUAL_WEIGHT:g}·LPIPS-VGG), {PGD_STEPS} steps, η 8",
              *per_image_pgd(mixture, images, eta_from_levels(8), perceptual=vgg, weight=PERCEPTUAL_WEIGHT), robust=True)
    if "pgd-budget" in args.rows:
        for levels in args.pgd_budget_etas:
            score(pgd_budget_label(levels), *per_image_pgd(mixture, images, eta_from_levels(levels), budget=budget, cap=False),
                  robust=True)
    if "eot" in args.rows:
        for levels in EOT_ETAS:
            score(f"EOT-PGD (differentiable JPEG q50–95 in half the steps), {PGD_STEPS} steps, η {levels}",
                  *per_image_pgd(mixture, images, eta_from_levels(levels), eot=True), robust=True)
    for board in boards:
        board.write(info, names, args.size)
        print(f"\n{machine_line(info)}; {len(names)} held-out images at {args.size}²; scored through {board.mimic}; results in {board.out}")
    return 0


# Below this mean noise damage (over a sample of images) a ratio is not shown: noise moves the measure by
# less than its own crop-to-crop spread, and dividing by it gives arbitrary numbers (4888× was printed once).
# One image's noise damage spreads more: the Space's verdict has its own, higher bar (verdict.MIN_NOISE_DAMAGE).
MIN_MEAN_NOISE_DAMAGE = 0.002


def ratio_text(values: dict) -> str:
    return f"{values['ratio']:.2f}" if values["noise_damage"] >= MIN_MEAN_NOISE_DAMAGE else "n/m"


def row_line(label: str, row: dict) -> str:
    pooled = row["all"]
    per_domain = " · ".join(f"{d} {ratio_text(row[d])}" for d in DOMAINS if d in row)
    robust = " · ".join(f"{pooled[f'survives_{n}']:.0%}" for n in ROBUSTNESS if f"survives_{n}" in pooled) or "–"
    seconds = pooled.get("seconds_per_image")
    transfer = f" | {pooled['transfer']:.0%}" if "transfer" in pooled else ""
    return (f"| {label} | {pooled['lpips']:.3f} | {pooled['lpips_vgg']:.3f} | {pooled['psnr']:.1f} | {pooled['flat_ratio']:.2f} "
            f"| {pooled['damage']:.3f} | {pooled['noise_damage']:.3f} | **{ratio_text(pooled)}** | {per_domain} | {pooled['pull']:.3f} "
            f"| {robust} | {'–' if seconds is None else f'{seconds:.2f}'}{transfer} |")


HEADER = ("| row | LPIPS-alex | LPIPS-VGG | PSNR dB | flat ratio | damage | noise damage (same PSNR) | ratio | ratio per domain "
          "| pull | survives JPEG75 · resize-half | s / image |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

if __name__ == "__main__":
    print(HEADER)
    raise SystemExit(main())
