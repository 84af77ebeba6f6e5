"""Training data: image folders -> a grouped, deterministic train / held-out split -> tensors.

Every folder given with ``--data`` is a *root*; an image's *domain* is the name of the sub-folder
it sits in (``object``, ``face``, ...), or the root's own name for images directly in it. When a
root holds a ``SOURCES.md`` with a markdown table that has ``file`` and ``group`` columns,
images sharing a group (subject, identity, source page) are kept on one side of the split;
otherwise every file is its own group.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from fastprotect.vocabulary import IMAGE_SUFFIXES, is_image_name

SPLIT_NAME = "split.json"


@dataclass(frozen=True)
class Entry:
    root: int  # index into the list of data roots
    path: str  # relative to its root, '/'-separated
    domain: str
    group: str


def read_groups(root: Path) -> dict[str, str]:
    """file name -> group, from the markdown tables of ``root/SOURCES.md`` (empty when absent)."""
    sources = root / "SOURCES.md"
    if not sources.is_file():
        return {}
    groups: dict[str, str] = {}
    columns: list[str] | None = None
    for line in sources.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if columns is None:
            columns = [cell.lower() for cell in cells]
        elif "file" in columns and "group" in columns and len(cells) == len(columns) and not set(cells[0]) <= {"-", ":"}:
            groups[cells[columns.index("file")]] = cells[columns.index("group")]
    return groups


def scan(roots: list[Path]) -> tuple[list[Entry], str]:
    """All images under ``roots`` (one level of sub-folders), sorted; and how they were grouped."""
    entries: list[Entry] = []
    grouped_by_sources = True
    for index, root in enumerate(roots):
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root}: not a folder")
        groups = read_groups(root)
        grouped_by_sources &= bool(groups)
        files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_name(p.name))
        for file in files:
            relative = file.relative_to(root)
            domain = relative.parts[0] if len(relative.parts) > 1 else root.name
            group = groups.get(file.name, f"file:{relative.as_posix()}")
            entries.append(Entry(index, relative.as_posix(), domain, f"{index}:{group}"))
    if not entries:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {', '.join(map(str, roots))}")
    grouping = "SOURCES.md group column" if grouped_by_sources else "per file (no SOURCES.md group column in some roots)"
    return entries, grouping


def _rank(text: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def split(entries: list[Entry], *, heldout_fraction: float, seed: int) -> tuple[list[Entry], list[Entry]]:
    """Deterministic grouped split, per domain: groups in seeded-hash order go to held-out until it
    holds ``heldout_fraction`` of the domain's images (at least one group when the domain has ≥ 2)."""
    train: list[Entry] = []
    heldout: list[Entry] = []
    for domain in sorted({e.domain for e in entries}):
        members = [e for e in entries if e.domain == domain]
        groups = sorted({e.group for e in members}, key=lambda g: _rank(g, seed))
        wanted = heldout_fraction * len(members)
        chosen: set[str] = set()
        count = 0
        for group in groups[:-1] if len(groups) > 1 else []:
            if count >= wanted or (chosen and count + sum(e.group == group for e in members) > 2 * wanted):
                continue
            chosen.add(group)
            count += sum(e.group == group for e in members)
        for entry in members:
            (heldout if entry.group in chosen else train).append(entry)
    return train, heldout


def write_split(path: Path, roots: list[Path], train: list[Entry], heldout: list[Entry], *, grouping: str, seed: int, heldout_fraction: float) -> None:
    payload = {
        "seed": seed,
        "heldout_fraction": heldout_fraction,
        "grouping": grouping,
        "roots": [str(root) for root in roots],
        "train": [asdict(e) for e in train],
        "heldout": [asdict(e) for e in heldout],
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")


def read_split(path: Path) -> tuple[list[Entry], list[Entry], dict]:
    payload = json.loads(Path(path).read_text())
    return [Entry(**e) for e in payload["train"]], [Entry(**e) for e in payload["heldout"]], payload


def load_square(path: Path, size: int) -> torch.Tensor:
    """Image file -> 3×size×size uint8: EXIF-rotated, RGB, short side resized to ``size``
    (bicubic, antialiased by PIL), centre-cropped."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        width, height = image.size
        scale = size / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.reshape(size, size, 3).permute(2, 0, 1).contiguous()


def load_entries(roots: list[Path], entries: list[Entry], size: int) -> torch.Tensor:
    """N×3×size×size uint8 (kept as 8 bits: 250 images at 256² are 50 MB)."""
    return torch.stack([load_square(roots[e.root] / e.path, size) for e in entries])


def load_frame(path: Path, long_side: int) -> torch.Tensor:
    """Image file -> 3×H×W uint8 with its aspect ratio: EXIF-rotated, RGB, resized (bicubic, antialiased
    by PIL) so that its long side is ``long_side`` — the whole frame, as a person uploads it."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        width, height = image.size
        scale = long_side / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.reshape(new_h, new_w, 3).permute(2, 0, 1).contiguous()
