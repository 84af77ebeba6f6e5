"""The edge between image files (or PIL images) and float tensors.

``load_image`` turns a file, bytes, a binary file object or a PIL image into a
``LoadedImage``: upright RGB pixels as a ``1×3×H×W`` float32 tensor in ``[0, 1]`` (every value
exactly ``k/255``) plus what must survive protection untouched (alpha, ICC profile, EXIF, the
rights metadata: text chunks, XMP, IPTC; resolution and PNG colour chunks).
``save_png`` writes protected pixels back as an 8-bit PNG of the same size with that side
information re-attached. Every refusal is an ``ImageError`` whose message is one readable line;
whatever is converted or dropped on the way is said in ``LoadedImage.notes``.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import sys
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from . import environment

DEFAULT_MAX_PIXELS: int = 40_000_000
MAX_PIXELS_ENV = "FASTPROTECT_MAX_PIXELS"
MIN_SIDE = 8  # the SD VAE maps each 8×8 patch to one latent pixel: smaller leaves nothing to protect
# DEFLATE level for written PNGs. The protective noise makes higher levels buy little: at 1 a 2048² file is
# ~15 % larger than at Pillow's default 6 but encodes ~3.5× faster (benchmarks/ablate_speed.py).
PNG_COMPRESS_LEVEL = 1
# Formats we decode (AVIF only where Pillow has it). Restricting Image.open keeps untrusted
# uploads away from plugins that run external programs (EPS calls Ghostscript).
FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
_ORIENTATION = 0x0112  # EXIF tag
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG text (tEXt/zTXt/iTXt) kept per image, decompressed, all chunks together. Pillow refuses the
# whole file past 1 MB in one chunk; we keep up to this much and drop (with a note) what is beyond,
# so a zTXt "bomb" costs at most this much memory and never the picture.
MAX_TEXT_BYTES = 16 * 2**20
XMP_KEY = "XML:com.adobe.xmp"  # the iTXt keyword XMP lives under in PNG
IPTC_KEY = "Raw profile type iptc"  # PNG has no IPTC chunk: ImageMagick/ExifTool's zTXt convention
# Text chunks that carry a copy of the EXIF: it is written re-serialised (eXIf, orientation 1, no
# thumbnail), so these copies (old orientation, maybe the unprotected thumbnail) are not kept.
_EXIF_TEXT_KEYS = ("Raw profile type exif", "Raw profile type APP1")
_IPTC_RESOURCE = 0x0404  # Photoshop image resource holding IPTC-IIM
_TIFF_IPTC, _TIFF_XMP = 33723, 700
# From a TIFF's IFD0 only these descriptive tags go into the output's EXIF; the rest describe the
# TIFF's own layout (StripOffsets, BitsPerSample, Compression, ...) and would be wrong in a PNG.
_TIFF_DESCRIPTIVE_TAGS = frozenset({
    0x010D, 0x010E, 0x010F, 0x0110, 0x011A, 0x011B, 0x011D, 0x0128, 0x0131, 0x0132, 0x013B, 0x013C,
    0x4746, 0x4749, 0x8298, 0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F,
})  # DocumentName ImageDescription Make Model X/YResolution PageName ResolutionUnit Software DateTime
#     Artist HostComputer Rating RatingPercent Copyright XPTitle XPComment XPAuthor XPKeywords XPSubject
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
MAX_STEM_CHARS = 120
# Linux and macOS allow 255 bytes per file name: "<stem>_<n>_protected.png" must still fit.
MAX_STEM_UTF8_BYTES = 200
_IMAGE_SUFFIXES = frozenset({
    ".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".jif", ".mpo", ".webp", ".gif", ".bmp", ".dib",
    ".tif", ".tiff", ".avif", ".avifs", ".heic", ".heif",
})
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*/\\')


class ImageError(ValueError):
    """Bad or refused input. ``str(error)`` is one line a user can read (no traceback text)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # decoder messages may hold newlines


@dataclass(eq=False)  # eq=False: comparing tensors field by field has no single truth value
class LoadedImage:
    """An image ready for protection, plus the side information ``save_png`` writes back.

    pixels: ``1×3×H×W`` float32 in ``[0, 1]``, upright (EXIF orientation applied), values ``k/255``; or, when
        loaded with ``load_image(..., levels=True)``, the same pixels as their 8-bit levels (uint8, a view of the
        decoded H×W×3 array): a quarter of the memory, read as floats band by band (:func:`pixel_rows`).
    alpha: the original alpha channel (mode ``"L"``, size ``W×H``), or None; never modified.
    icc_profile / exif: raw bytes written back into the PNG (EXIF orientation reset to 1).
    text: PNG text chunks to write (keyword -> value; ``PngImagePlugin.iTXt`` values keep their
        language tag), plus a JPEG/GIF comment as ``"Comment"``.
    xmp: the XMP packet (UTF-8 bytes, kept byte for byte unless its ``tiff:Orientation`` had to be
        reset to 1), written as iTXt ``XML:com.adobe.xmp``.
    iptc: IPTC-IIM records (from JPEG APP13 or a TIFF's IPTC tag), written as a zTXt
        ``Raw profile type iptc`` holding a Photoshop resource block, as ExifTool and ImageMagick do.
    dpi: the resolution in dots per inch, written as pHYs; None if the source had none.
    png_colour: raw PNG ``cICP``/``gAMA``/``cHRM``/``sRGB`` chunk data, written back unchanged
        (dropped when the colours were converted to sRGB through an ICC profile).
    name: a safe stem of the source file name (``safe_stem``), ``"image"`` if unknown.
    notes: conversions a user should know about, e.g. ``"CMYK converted to RGB"``, and anything
        that could not be kept.
    """

    pixels: torch.Tensor = field(repr=False)
    alpha: Image.Image | None = field(default=None, repr=False)
    icc_profile: bytes | None = field(default=None, repr=False)
    exif: bytes | None = field(default=None, repr=False)
    text: dict[str, str] = field(default_factory=dict, repr=False)
    xmp: bytes | None = field(default=None, repr=False)
    iptc: bytes | None = field(default=None, repr=False)
    dpi: tuple[float, float] | None = None
    png_colour: dict[str, bytes] = field(default_factory=dict, repr=False)
    name: str = "image"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_pixels(self.pixels)
        if self.alpha is not None and (self.alpha.mode != "L" or self.alpha.size != (self.width, self.height)):
            raise ValueError(f"alpha must be mode L of size {self.width}×{self.height}, got {self.alpha.mode} {self.alpha.size}")

    @property
    def width(self) -> int:
        return self.pixels.shape[-1]

    @property
    def height(self) -> int:
        return self.pixels.shape[-2]


# ---------------------------------------------------------------------------------------------
# tensors <-> 8-bit arrays


def _check_pixels(pixels: torch.Tensor) -> None:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[:2] != (1, 3):
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"pixels must be a 1×3×H×W tensor, got {shape}")


def pixels_to_uint8(pixels: torch.Tensor, *, channels: int = 3) -> np.ndarray:
    """``1×3×H×W`` float in ``[0, 1]`` or uint8 levels (any device) -> ``H×W×channels`` uint8, rounded to nearest
    (channels 4: the fourth left for the caller to fill, e.g. with alpha).

    Values outside ``[0, 1]`` are clamped (float error at the ends is expected); NaN or
    infinity is a bug upstream and raises ValueError rather than writing garbage. Works in bands of rows: no
    full-size float temporary.
    """
    _check_pixels(pixels)
    height, width = pixels.shape[-2:]
    out = np.empty((height, width, channels), dtype=np.uint8)
    for start in range(0, height, _BAND_ROWS):
        _rows_to_uint8(pixels, start, min(height, start + _BAND_ROWS), out[start : start + _BAND_ROWS])
    return out


def _rows_to_uint8(pixels: torch.Tensor, start: int, stop: int, out: np.ndarray) -> None:
    """Rows ``start:stop`` of ``1×3×H×W`` pixels (float in [0, 1] or uint8 levels) into ``out[..., :3]``
    (``(stop − start)×W×channels`` uint8), as :func:`pixels_to_uint8` converts them."""
    target = torch.from_numpy(out)
    band = pixels[0, :, start:stop].detach()
    if band.dtype == torch.uint8:
        target[..., :3] = band.cpu().permute(1, 2, 0)
        return
    band = band.to("cpu", torch.float32)
    if not torch.isfinite(band).all():
        raise ValueError("pixels contain NaN or infinity")
    target[..., :3] = (band.clamp(0, 1) * 255).round_().permute(1, 2, 0)


def is_levels(pixels: torch.Tensor) -> bool:
    """Whether ``pixels`` are 8-bit levels (uint8, 0–255) rather than floats in [0, 1]."""
    return pixels.dtype == torch.uint8


def pixel_rows(images: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of B×C×H×W images as float32 in [0, 1], contiguous: a view of float32 images, or uint8
    levels ÷ 255 (the very values :func:`uint8_to_pixels` gives: the level converted to float, then divided)."""
    rows = images[..., start:stop, :]
    if not is_levels(rows):
        return rows.float()
    return rows.to(torch.float32, memory_format=torch.contiguous_format).div_(255)


def levels_to_pixels(images: torch.Tensor) -> torch.Tensor:
    """B×C×H×W uint8 levels -> float32 in [0, 1] (``k/255``, contiguous), band by band; float images as they are."""
    if not is_levels(images):
        return images
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    for start in range(0, images.shape[-2], _BAND_ROWS):
        out[..., start : start + _BAND_ROWS, :] = pixel_rows(images, start, start + _BAND_ROWS)
    return out


def pixels_to_levels(images: torch.Tensor) -> torch.Tensor:
    """B×C×H×W float in [0, 1] on the 8-bit grid -> its uint8 levels (rounded, clamped), band by band; levels as they are."""
    if is_levels(images):
        return images
    out = torch.empty(images.shape, dtype=torch.uint8, device=images.device)
    for start in range(0, images.shape[-2], _BAND_ROWS):
        out[..., start : start + _BAND_ROWS, :] = (images[..., start : start + _BAND_ROWS, :].clamp(0, 1) * 255).round_()
    return out


def uint8_to_pixels(array: np.ndarray) -> torch.Tensor:
    """``H×W×3`` uint8 -> ``1×3×H×W`` float32 in ``[0, 1]``, values exactly ``k/255`` (CPU).

    One strided conversion into the planar float tensor, then an in-place division (the same k/255 as
    dividing a copy): no intermediate copy of the array (PIL's arrays are read-only, and only read)."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"array must be H×W×3 uint8, got {array.shape} {array.dtype}")
    levels = torch.from_numpy(array) if array.flags.writeable else torch.frombuffer(_readonly_buffer(array), dtype=torch.uint8)
    levels = levels.view(array.shape)
    pixels = torch.empty((1, 3, *array.shape[:2]), dtype=torch.float32)
    for start in range(0, array.shape[0], _BAND_ROWS):  # bands: the uint8 rows stay in cache between the two steps
        band = pixels[0, :, start : start + _BAND_ROWS]
        band.copy_(levels[start : start + _BAND_ROWS].permute(2, 0, 1))
        band.div_(255)
    return pixels


def _readonly_buffer(array: np.ndarray) -> memoryview | np.ndarray:
    """A read-only C-contiguous array as a buffer torch can view without a copy (torch warns about, but never writes
    through, a non-writable buffer here); a non-contiguous one is copied."""
    import warnings

    if not array.flags.c_contiguous:
        return np.ascontiguousarray(array)
    warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
    return memoryview(array).cast("B")


# pixels_to_uint8, uint8_to_pixels and the PNG writer work in bands of this many rows
_BAND_ROWS = 256


# ---------------------------------------------------------------------------------------------
# loading


def resize_tensor(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of B×C×H×W (antialiased when shrinking); the same tensor at the same size.

    The one resize of the project: training encodes its assignment copies and the Protector its
    routing copy with this function, so an image is routed at inference exactly as in training."""
    if tuple(images.shape[-2:]) == (height, width):
        return images
    shrinking = height < images.shape[-2] or width < images.shape[-1]
    return torch.nn.functional.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)


def resize_image(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """:func:`resize_tensor` of images that may be uint8 levels (float32 out): the values it gives on the float
    pixels, without their full-size float copy.

    On the CPU PyTorch's bilinear resize is separable: the rows are resized along the width into a temporary, then
    that is resized along the height. Here the first pass runs band by band on rows converted to float
    (:func:`pixel_rows`) and the second on the narrow temporary, with the same antialias setting as the one call:
    the same numbers bit for bit (tests/test_images.py compares them). Float images, and levels on other devices, take
    the one call."""
    if not is_levels(images) or images.device.type != "cpu":
        return resize_tensor(levels_to_pixels(images), height, width)
    rows, columns = images.shape[-2:]
    if (rows, columns) == (height, width):
        return levels_to_pixels(images)
    antialias = height < rows or width < columns
    narrow = torch.empty((*images.shape[:-1], width), dtype=torch.float32)
    for start in range(0, rows, _BAND_ROWS):
        band = pixel_rows(images, start, start + _BAND_ROWS)
        narrow[..., start : start + _BAND_ROWS, :] = band if width == columns else torch.nn.functional.interpolate(
            band, size=(band.shape[-2], width), mode="bilinear", align_corners=False, antialias=antialias)
    if height == rows:
        return narrow
    return torch.nn.functional.interpolate(narrow, size=(height, width), mode="bilinear", align_corners=False, antialias=antialias)


def fit_within(height: int, width: int, long_side: int | None, *, min_side: int = 1, multiple: int = 1) -> tuple[int, int]:
    """The size of a working copy of an H×W image: scaled down (never up) so that its long side is
    at most ``long_side`` (None: no limit), aspect kept; then each side rounded to a multiple of
    ``multiple`` and raised to at least ``min_side``.

    The one "working size" rule of the project: LPIPS/SSIM copies (min_side 64, the LPIPS trunks'
    smallest useful input), PGD working copies, evaluation copies and diffusion pipelines (multiple 8).
    """
    scale = min(1.0, long_side / max(height, width)) if long_side else 1.0

    def side(value: int) -> int:
        return max(min_side, multiple, int(round(value * scale / multiple)) * multiple)

    return side(height), side(width)


def unique_stem(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``, … if an equal one ignoring case is in ``used`` (then added).

    Outputs of one batch (CLI folder or Space ZIP) never overwrite each other, also on
    case-insensitive file systems and ZIP extractors (``A.jpg`` and ``a.png`` both give ``a…``).
    "Equal" is Unicode-aware: NFC then ``str.casefold`` (``Straße``/``STRASSE``, and a decomposed
    ``café`` as macOS stores it, clash)."""

    def key(text: str) -> str:
        return unicodedata.normalize("NFC", text).casefold()

    candidate, counter = stem, 1
    while key(candidate) in used:
        counter += 1
        candidate = f"{stem}_{counter}"
    used.add(key(candidate))
    return candidate


def _unsafe_char(char: str) -> bool:
    if char in "\u200c\u200d":  # zero-width (non-)joiners: part of Persian, Indic and emoji spellings
        return False
    return char in _WINDOWS_FORBIDDEN or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp")


def _extends_previous(char: str) -> bool:
    """True for characters that belong to the one before (combining marks, variation selectors, ZWJ)."""
    return unicodedata.category(char) in ("Mn", "Mc", "Me") or char == "\u200d"


def _cut(stem: str, max_chars: int, max_bytes: int) -> str:
    """At most ``max_chars`` characters and ``max_bytes`` UTF-8 bytes, never splitting a base
    character from its combining marks (nor the two halves of a flag or a ZWJ sequence)."""
    end, size = 0, 0
    while end < len(stem) and end < max_chars and size + len(stem[end].encode("utf-8", "surrogatepass")) <= max_bytes:
        size += len(stem[end].encode("utf-8", "surrogatepass"))
        end += 1
    if end == len(stem):
        return stem
    while end > 0 and (_extends_previous(stem[end]) or stem[end - 1] == "\u200d"):
        end -= 1  # the cut fell inside a cluster: drop the whole cluster
    flags = 0
    while end - flags > 0 and "\U0001f1e6" <= stem[end - flags - 1] <= "\U0001f1ff":
        flags += 1
    return stem[: end - (flags % 2)]  # regional indicators pair into flags


def safe_stem(name: str | os.PathLike | None, default: str = "image") -> str:
    """A file-name stem that is safe to write and serve, and still the user's name.

    Takes the last path component (at ``/`` or ``\\``, so ``../`` never escapes a folder), drops
    an image extension (``.jpg``, ``.PNG``, …: other dotted parts are part of the name), normalises
    to NFC, replaces control and format characters (Unicode Cc/Cf, line separators; NUL, newlines,
    bidi overrides; the zero-width joiners are kept) and the characters Windows forbids
    (``<>:"|?*``) by ``_``, strips leading and trailing dots and spaces, and cuts at
    ``MAX_STEM_CHARS`` characters / ``MAX_STEM_UTF8_BYTES`` UTF-8 bytes (file systems allow 255
    bytes a name) without splitting a character from its combining marks. ``default`` if nothing is
    left. Letters of every script, spaces, brackets and emoji are kept:
    ``"café 東京 (1).JPG"`` -> ``"café 東京 (1)"``.
    """
    text = os.fspath(name) if name is not None else ""
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    text = re.split(r"[/\\]", text)[-1]
    base, dot, suffix = text.rpartition(".")
    if dot and base and f".{suffix}".lower() in _IMAGE_SUFFIXES:
        text = base
    text = unicodedata.normalize("NFC", text)
    text = "".join("_" if _unsafe_char(char) else char for char in text)
    text = text.strip(". ")
    text = _cut(text, MAX_STEM_CHARS, MAX_STEM_UTF8_BYTES).rstrip(". ")
    return text or default


def _max_pixels(max_pixels: int | None) -> int:
    if max_pixels is None:
        return environment.get_int(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    return max_pixels


def _available_formats() -> list[str]:
    Image.init()  # registers the plugins; done here, not at import, to keep the import cheap
    return [f for f in FORMATS if f in Image.OPEN]


@dataclass
class _PngText:
    """A PNG's text chunks as read by ``_scan_png_text``, within ``MAX_TEXT_BYTES``."""

    text: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cicp: bytes | None = None  # the cICP chunk (colour primaries / transfer, e.g. HDR): Pillow does not read it
    hide_from_pillow: bool = False  # Pillow would refuse the file over one of them: decode a copy without any


def _text_note(keyword: str, why: str) -> str:
    return f"PNG text chunk {keyword[:40]!r} dropped: {why}"


def _decode_text_chunk(kind: bytes, data: bytes, budget: int) -> tuple[str, str | None, str | None]:
    """-> (keyword, value or None, why it was dropped or None). ``budget``: decompressed bytes allowed."""
    keyword_bytes, _, rest = data.partition(b"\0")
    keyword = keyword_bytes.decode("latin-1")
    compressed, lang, tkey = kind == b"zTXt", "", ""
    if kind == b"zTXt":
        method, rest = rest[:1], rest[1:]
        if method not in (b"\0", b""):
            return keyword, None, "unknown compression method"
    elif kind == b"iTXt":
        if len(rest) < 2:
            return keyword, None, "malformed"
        flag, method, rest = rest[0], rest[1], rest[2:]
        lang_bytes, _, rest = rest.partition(b"\0")
        tkey_bytes, _, rest = rest.partition(b"\0")
        compressed = flag != 0
        if compressed and method != 0:
            return keyword, None, "unknown compression method"
        try:
            lang, tkey = lang_bytes.decode("utf-8"), tkey_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return keyword, None, "not UTF-8"
    if compressed:
        inflater = zlib.decompressobj()
        try:
            rest = inflater.decompress(rest, budget + 1)  # bounded: a zTXt bomb stops here
        except zlib.error:
            return keyword, None, "damaged compressed data"
        if len(rest) > budget or inflater.unconsumed_tail:
            return keyword, None, f"over the {MAX_TEXT_BYTES // 2**20} MB limit for text metadata"
    if len(rest) > budget:
        return keyword, None, f"over the {MAX_TEXT_BYTES // 2**20} MB limit for text metadata"
    if kind != b"iTXt":
        return keyword, rest.decode("latin-1"), None
    try:
        return keyword, PngImagePlugin.iTXt(rest.decode("utf-8"), lang, tkey), None
    except UnicodeDecodeError:
        return keyword, None, "not UTF-8"


def _scan_png_text(fp: BinaryIO) -> _PngText | None:
    """Read every text chunk of a PNG ourselves, bounded, from ``fp``'s position (restored after).

    None if ``fp`` does not hold a PNG. Pillow refuses a whole image when one text chunk inflates
    past 1 MB or has a bad CRC; we keep each chunk we can (up to ``MAX_TEXT_BYTES`` in all) and drop
    the others with a note, and then Pillow decodes the pixels from a copy without text chunks.
    """
    start = fp.tell()
    try:
        if fp.read(8) != PNG_SIGNATURE:
            return None
        scan, budget = _PngText(), MAX_TEXT_BYTES
        while True:
            header = fp.read(8)
            if len(header) < 8:
                break  # truncated: Pillow says so when it decodes
            length, kind = struct.unpack(">I4s", header)
            if kind == b"IEND":
                break
            if kind == b"cICP" and length == 4:
                scan.cicp = fp.read(4)
                fp.seek(4, io.SEEK_CUR)
                continue
            if kind not in (b"tEXt", b"zTXt", b"iTXt"):
                fp.seek(length + 4, io.SEEK_CUR)
                continue
            if length > budget:  # bigger than all that is left, even before inflating: not read at all
                fp.seek(length + 4, io.SEEK_CUR)
                peek = f"{kind.decode()} chunk"
                scan.notes.append(_text_note(peek, f"over the {MAX_TEXT_BYTES // 2**20} MB limit for text metadata"))
                scan.hide_from_pillow = True
                continue
            data = fp.read(length)
            crc = fp.read(4)
            if len(data) < length or len(crc) < 4:
                break
            if zlib.crc32(kind + data) != struct.unpack(">I", crc)[0]:
                keyword, value, why = data.partition(b"\0")[0].decode("latin-1"), None, "damaged (bad checksum)"
            else:
                keyword, value, why = _decode_text_chunk(kind, data, budget)
            if value is None or not keyword:
                scan.notes.append(_text_note(keyword, why or "no keyword"))
                scan.hide_from_pillow = True
                continue
            if keyword in scan.text:
                scan.notes.append(f"PNG text chunk {keyword[:40]!r} appears more than once: only the last is kept")
            size = len(value.encode("utf-8"))
            budget -= size
            scan.text[keyword] = value
            if size > PngImagePlugin.MAX_TEXT_CHUNK // 2 or budget < MAX_TEXT_BYTES // 4:
                scan.hide_from_pillow = True  # near or past Pillow's own limits (per chunk, in all)
        return scan
    finally:
        fp.seek(start)


def _png_without_text(fp: BinaryIO) -> io.BytesIO:
    """A copy of the PNG at ``fp``'s position without its tEXt/zTXt/iTXt chunks (already read by us)."""
    out = io.BytesIO()
    out.write(fp.read(8))
    while True:
        header = fp.read(8)
        if len(header) < 8:
            out.write(header)
            break
        length, kind = struct.unpack(">I4s", header)
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            fp.seek(length + 4, io.SEEK_CUR)
            continue
        out.write(header)
        out.write(fp.read(length + 4))
        if kind == b"IEND":
            break
    out.seek(0)
    return out


def _open(source: str | os.PathLike | bytes | BinaryIO, limit: int) -> tuple[Image.Image, str | None, _PngText | None]:
    """Open lazily (header only) -> (image, the source's file name without its folder if any, the
    text chunks if it is a PNG)."""
    file_name: str | None = None
    png_text: _PngText | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        file_name = path.name
        if not path.is_file():
            raise ImageError(f"file not found: {file_name!r}")
        if path.stat().st_size == 0:
            raise ImageError(f"empty file: {file_name!r}")
        fp: Path | BinaryIO = path
        with open(path, "rb") as handle:
            png_text = _scan_png_text(handle)
            if png_text is not None and png_text.hide_from_pillow:
                fp = _png_without_text(handle)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty file: no image data")
        fp = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        file_name = Path(str(getattr(source, "name", ""))).name or None
        fp = source
        try:
            fp.seek(fp.tell())
        except (AttributeError, OSError, ValueError):  # not seekable (a pipe, a socket): read it all
            fp = io.BytesIO(source.read())
    else:
        raise TypeError(f"cannot load an image from {type(source).__name__}")
    if not isinstance(fp, Path) and png_text is None:
        png_text = _scan_png_text(fp)
        if png_text is not None and png_text.hide_from_pillow:
            fp = _png_without_text(fp)
    label = repr(file_name) if file_name else "(uploaded data)"  # never a full path: it may be a server's
    formats = _available_formats()
    try:
        return Image.open(fp, formats=formats), file_name, png_text
    except UnidentifiedImageError:
        raise ImageError(f"not an image: cannot identify image file {label} (supported: {', '.join(formats)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(_bomb_message(error, limit)) from None
    except Exception as error:  # any decoder failure on untrusted bytes is bad input, not a bug
        raise ImageError(f"cannot read image {label}: {error}") from None


def _bomb_message(error: Exception, limit: int) -> str:
    """Pillow refused the size before we saw it; restate its numbers like our own limit check."""
    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(error))
    if not found:
        return f"image too large: {error}"
    size, pillow_limit = (int(n) for n in found.groups())
    shown = limit if size > limit else pillow_limit
    return f"image is {size / 1e6:.1f} MP, over the {shown / 1e6:.1f} MP limit"


def _check_size(image: Image.Image, limit: int) -> None:
    """Refuse from the header alone, before decoding a single pixel."""
    width, height = image.size
    if width * height > limit:
        raise ImageError(f"image is {width}×{height} = {width * height / 1e6:.1f} MP, over the {limit / 1e6:.1f} MP limit")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"image is {width}×{height} pixels, too small to protect (each side needs at least {MIN_SIDE} pixels)")


def _check_frames(image: Image.Image, notes: list[str]) -> None:
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format == "MPO":
        # Cameras and phones store previews or stereo pairs after the main JPEG picture.
        notes.append(f"multi-picture JPEG ({frames} pictures): only the main picture is used")
    elif frames > 1:
        kind = "animated" if image.format in ("GIF", "PNG", "WEBP", "AVIF", None) else "multi-page"
        raise ImageError(f"{kind} image ({frames} frames): upload a single still image")


def _is_16_bit(image: Image.Image) -> bool:
    """True for 16-bit RGB(A) sources: Pillow decodes them straight to 8-bit "RGB"/"RGBA" (keeping
    the high byte); only the pending decoder tile (rawmode "RGB;16B") still tells us. Integer
    greyscale modes ("I;16", "I") are reduced by ``_reduce_integer``, which says so itself."""
    if image.mode.startswith("I") or image.mode == "F":
        return False
    return any(";16" in str(tile.args) for tile in getattr(image, "tile", []))


# Pillow's unpacker for big-endian 16-bit samples ("RGB;16B") keeps byte 0 of each, its
# little-endian twin ("RGB;16L") byte 1. Decoding a file a second time with the opposite byte
# order therefore yields the low bytes the first decode dropped.
_OPPOSITE_BYTE_ORDER = {";16B": ";16L", ";16L": ";16B", ";16N": ";16B" if sys.byteorder == "little" else ";16L"}


def _rawmode(args: object) -> str:
    return args if isinstance(args, str) else args[0]  # PNG tiles carry the rawmode alone, TIFF tiles a tuple


def _low_bytes(image: Image.Image) -> np.ndarray | None:
    """Before ``image.load()`` of a 16-bit colour source: the low byte of every sample, shaped like
    ``np.asarray(image)`` once loaded; None when Pillow has no opposite-order unpacker (16-bit
    grey+alpha) or the second decode fails, and then the high byte alone is kept, as Pillow does.
    Reads the file once more from ``image.fp`` (Pillow opens every image at offset 0)."""
    fp = getattr(image, "fp", None)
    tiles = list(getattr(image, "tile", []))
    if fp is None or not tiles:
        return None
    try:
        position = fp.tell()
        fp.seek(0)
        data = fp.read()
        fp.seek(position)
        twin = Image.open(io.BytesIO(data), formats=[image.format] if image.format else None)
        if len(twin.tile) != len(tiles) or twin.size != image.size or twin.mode != image.mode:
            return None
        swapped = []
        for codec, extents, offset, args in twin.tile:
            rawmode = _rawmode(args)
            suffix = next((end for end in _OPPOSITE_BYTE_ORDER if rawmode.endswith(end)), None)
            if suffix is None:
                return None
            other = rawmode[: -len(suffix)] + _OPPOSITE_BYTE_ORDER[suffix]
            swapped.append((codec, extents, offset, other if isinstance(args, str) else (other, *args[1:])))
        twin.tile = swapped
        twin.load()
        return np.asarray(twin)
    except Exception:  # an unpacker Pillow lacks ("LA;16L"), a decoder quirk: keep Pillow's high bytes
        return None


def _round_16_bit(image: Image.Image, low: np.ndarray | None, notes: list[str]) -> None:
    """Replace the high bytes Pillow decoded with ``round(value / 257)`` of the full 16-bit values,
    in place (so the image keeps its format and metadata); the same rounding ``_reduce_integer``
    gives greyscale. Truncating instead moves about half of all samples one level down."""
    high = np.asarray(image)
    if low is None or low.shape != high.shape:
        notes.append("16-bit image reduced to 8 bits per channel (high byte of each sample kept)")
        return
    values = high.astype(np.uint32) * 256 + low
    image.frombytes(((values * 255 + 32767) // 65535).astype(np.uint8).tobytes())
    notes.append("16-bit image reduced to 8 bits per channel")


@dataclass(frozen=True)
class _Depth:
    """What an integer greyscale image's values mean: ``bits`` per sample, ``signed``; ``known``
    False when the file does not say (an "I" image in memory, a PNG) and the values decide."""

    bits: int
    signed: bool
    known: bool = True


def _integer_depth(image: Image.Image) -> _Depth | None:
    """The sample depth of an "I*" image, read before decoding (TIFF tags are gone after transposing)."""
    if not image.mode.startswith("I"):
        return None
    tags = getattr(image, "tag_v2", None)
    if tags is not None:  # TIFF: BitsPerSample and SampleFormat (1 unsigned, 2 signed) say it
        bits, sample_format = tags.get(258, (None,)), tags.get(339, (1,))
        bits = bits[0] if isinstance(bits, tuple) else bits
        sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
        if isinstance(bits, int) and 1 <= bits <= 32:
            return _Depth(bits, sample_format == 2)
    if image.mode.startswith("I;16"):
        return _Depth(16, image.mode.endswith("S"))
    return None


def _upright(image: Image.Image, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    """-> (new upright image, EXIF bytes to write back). Never modifies ``image``.

    EXIF is always re-serialised by Pillow: orientation becomes 1 (pixels are upright now) and
    the IFD1 thumbnail, an unprotected copy of the picture, is left out. From a TIFF only the
    descriptive tags of IFD0 and the EXIF and GPS sub-IFDs are kept (the rest is TIFF layout).
    """
    try:
        exif = image.getexif()
        orientation = exif.get(_ORIENTATION, 1)
        upright = ImageOps.exif_transpose(image)  # a new image even when nothing is transposed
        if not exif:
            if image.info.get("exif"):  # Pillow skips EXIF it cannot parse, with only a warning
                notes.append("unreadable EXIF metadata dropped")
            return upright, None
        fresh = Image.Exif()  # a copy, so the caller's cached Exif object stays as it was
        if image.format == "TIFF":
            for tag, value in exif.items():
                if tag in _TIFF_DESCRIPTIVE_TAGS:
                    fresh[tag] = value
            for tag in (_EXIF_IFD, _GPS_IFD):
                if tag in exif and (ifd := exif.get_ifd(tag)):
                    fresh[tag] = dict(ifd)
        else:
            fresh.load(exif.tobytes())
            if _ORIENTATION in fresh:
                fresh[_ORIENTATION] = 1
        if orientation in range(2, 9):
            notes.append(f"EXIF orientation applied (tag value {orientation}); the result is saved upright")
        return upright, (fresh.tobytes() if len(fresh) else None)
    except Exception:  # corrupt metadata should not cost the user their picture
        notes.append("unreadable EXIF metadata dropped")
        return image.copy(), None


def _split_alpha(image: Image.Image, depth: _Depth | None, notes: list[str]) -> tuple[Image.Image, Image.Image | None]:
    """-> (colour image without alpha, in L/RGB/CMYK/...; alpha as mode "L" or None)."""
    mode, colour_key = image.mode, "transparency" in image.info
    if mode.startswith("I"):
        return _reduce_integer(image, depth, notes)
    if mode == "F":
        return _reduce_float(image, notes), None
    if mode in ("P", "PA"):
        transparent = mode == "PA" or colour_key or (image.palette is not None and image.palette.mode == "RGBA")
        image = image.convert("RGBA" if transparent else "RGB")
        notes.append(f"palette image converted to {image.mode}")
    elif mode == "1":
        image = image.convert("LA" if colour_key else "L")
        notes.append("1-bit image expanded to 8-bit greyscale")
    elif mode in ("L", "RGB") and colour_key:  # PNG tRNS: one colour means "transparent"
        image = image.convert("LA" if mode == "L" else "RGBA")
    elif mode in ("La", "RGBa"):  # premultiplied alpha: undo it so colours are the real ones
        image = image.convert(mode.upper())
    if "A" not in image.getbands():
        return image, None
    return image.convert(image.mode[:-1]), image.getchannel("A")  # LA -> L, RGBA -> RGB


def _reduce_integer(image: Image.Image, depth: _Depth | None, notes: list[str]) -> tuple[Image.Image, Image.Image | None]:
    """I;16* / I greyscale -> (L, alpha), scaled by the full range of the sample depth and rounded,
    so 8-bit data stored as 16-bit (k·257) comes back exactly. Pillow's own convert("L") would clip
    everything above 255 to white.

    The depth comes from the file (TIFF BitsPerSample/SampleFormat; "I;16" modes). Pillow reads
    unsigned 32-bit TIFF samples as signed "I": they are reinterpreted. Without a stated depth (an
    "I" image in memory) values within 0..65535 are taken as 16-bit, larger ones as signed 32-bit.
    Negative values of signed images become black.
    """
    values = np.asarray(image)
    if depth is None:
        fits_16 = values.size == 0 or (int(values.min()) >= 0 and int(values.max()) <= 65535)
        depth = _Depth(16, False, known=False) if fits_16 else _Depth(32, True, known=False)
    if depth.bits == 32 and not depth.signed and values.dtype == np.int32:
        values = values.view(np.uint32)
    values = values.astype(np.int64)
    full = (1 << (depth.bits - 1)) - 1 if depth.signed else (1 << depth.bits) - 1
    clipped_low, clipped_high = bool((values < 0).any()), bool((values > full).any())
    grey = ((np.clip(values, 0, full) * 255 + full // 2) // full).astype(np.uint8)
    if depth.bits == 16 and not depth.signed and not clipped_high:
        notes.append("16-bit image reduced to 8 bits per channel")
    else:
        kind = "signed integer" if depth.signed else "integer"
        assumed = " (depth not stated in the file: assumed from the values)" if not depth.known else ""
        notes.append(f"{depth.bits}-bit {kind} image scaled to 8 bits per channel (0..{full} -> 0..255){assumed}")
    if clipped_low:
        notes.append("negative sample values shown as black")
    if clipped_high:
        notes.append(f"sample values above {full} (more than the file's {depth.bits} bits) shown as white")
    alpha = None
    if "transparency" in image.info:  # Pillow's colour-key conversion is wrong for 16-bit values
        alpha = Image.fromarray(np.where(np.asarray(image) == image.info["transparency"], 0, 255).astype(np.uint8))
    return Image.fromarray(grey), alpha


def _reduce_float(image: Image.Image, notes: list[str]) -> Image.Image:
    """"F" (32-bit float greyscale, e.g. a float TIFF) -> L. Values must lie in [0, 1] (the usual
    convention for normalised float images); anything else is refused rather than guessed at."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ImageError("32-bit floating-point image with NaN or infinite values: save it as an 8- or 16-bit image")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise ImageError(
            f"32-bit floating-point image with values from {low:g} to {high:g}; only values within 0..1 "
            "are supported: save it as an 8- or 16-bit image"
        )
    notes.append("32-bit floating-point image (values 0..1) reduced to 8 bits per channel")
    return Image.fromarray(np.round(values * 255).astype(np.uint8))


def _is_rgb_profile(icc: bytes) -> bool:
    return icc[16:20] == b"RGB "  # ICC header: data colour space signature at bytes 16-19


def _to_rgb(image: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bytes | None, bool]:
    """Colour image (no alpha) -> (RGB image, ICC profile that is valid for it or None, whether the
    colours were converted through a profile)."""
    if image.mode == "RGB":
        if icc is not None and not _is_rgb_profile(icc):
            notes.append("ICC profile dropped: it does not describe RGB data")
            icc = None
        return image, icc, False
    label = {"L": "greyscale image", "CMYK": "CMYK"}.get(image.mode, f"{image.mode} image")
    if icc is not None and not _is_rgb_profile(icc):
        # The profile describes the source colour space (CMYK, grey); convert through it to sRGB
        # and drop it, since it cannot describe RGB output (viewers assume sRGB without one).
        converted = _icc_to_srgb(image, icc)
        if converted is not None:
            notes.append(f"{label} converted to RGB (sRGB) through its ICC profile, which is not kept")
            return converted, None, True
        notes.append("ICC profile dropped: it could not be applied")
        icc = None
    try:
        converted = image.convert("RGB")
    except ValueError:
        raise ImageError(f"unsupported image mode {image.mode}: save it as RGB") from None
    notes.append(f"{label} converted to RGB")
    return converted, icc, False


def _icc_to_srgb(image: Image.Image, icc: bytes) -> Image.Image | None:
    try:
        from PIL import ImageCms  # optional: Pillow built without LittleCMS still loads images

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # broken or unusable profile: fall back to a plain conversion
        return None


def load_image(
    source: str | os.PathLike | bytes | BinaryIO | Image.Image,
    *,
    max_pixels: int | None = None,
    name: str | None = None,
    levels: bool = False,
) -> LoadedImage:
    """Load a still image as upright RGB pixels (``1×3×H×W`` float32, ``[0, 1]``) + side info.

    ``max_pixels`` defaults to ``$FASTPROTECT_MAX_PIXELS`` or ``DEFAULT_MAX_PIXELS``; ``name``
    (a file name; ``safe_stem`` of it is kept) overrides the name taken from the source.
    ``levels``: keep the pixels as their 8-bit levels (uint8, a quarter of the float tensor's memory: 115 MB instead
    of 460 MB at 40 MP), for callers that read them band by band (``Protector.protect``, ``save_png``).
    Raises ImageError for anything that is not a single still image we can protect.
    """
    limit = _max_pixels(max_pixels)
    if isinstance(source, Image.Image):
        file_name = Path(getattr(source, "filename", "") or "").name or None
        return _load_opened(source, limit, name or file_name, None, own=False, levels=levels)
    image, file_name, png_text = _open(source, limit)
    with image:  # closes files we opened; a caller's file object is left open
        return _load_opened(image, limit, name or file_name, png_text, own=True, levels=levels)


def _levels_view(array: np.ndarray) -> torch.Tensor:
    """An H×W×3 uint8 array as ``1×3×H×W`` levels without a copy (a channels-last view; only ever read)."""
    levels = torch.from_numpy(array) if array.flags.writeable else torch.frombuffer(_readonly_buffer(array), dtype=torch.uint8)
    return levels.view(array.shape).permute(2, 0, 1).unsqueeze(0)


def _load_opened(image: Image.Image, limit: int, name: str | None, png_text: _PngText | None, *, own: bool,
                 levels: bool = False) -> LoadedImage:
    notes: list[str] = []
    _check_size(image, limit)
    try:
        _check_frames(image, notes)
        sixteen_bit = _is_16_bit(image)  # must look before load(), which clears the tile
        low = _low_bytes(image) if sixteen_bit else None  # before load() too: it may close the file
        depth = _integer_depth(image)
        image.load()  # decode now: truncated data raises here (ImageFile.LOAD_TRUNCATED_IMAGES is False)
    except (ImageError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(_bomb_message(error, limit)) from None
    except Exception as error:  # any decoder failure on untrusted bytes is bad input, not a bug
        raise ImageError(f"cannot decode image {repr(name) if name else '(uploaded data)'}: {error}") from None
    if sixteen_bit:
        _round_16_bit(image, low, notes)
    text, xmp, iptc = _metadata(image, png_text, notes)
    if own and png_text is not None and png_text.hide_from_pillow:
        # Pillow did not see the text chunks: give it the ones it reads orientation and EXIF from.
        for key in _EXIF_TEXT_KEYS[:1]:
            if key in png_text.text:
                image.info.setdefault(key, str(png_text.text[key]))
        if xmp is not None:
            image.info.setdefault("xmp", xmp)
    icc = image.info.get("icc_profile") or None
    dpi, png_colour = _resolution(image), _png_colour(image)
    if png_text is not None and png_text.cicp is not None:
        png_colour["cICP"] = png_text.cicp
    upright, exif = _upright(image, notes)
    colour, alpha = _split_alpha(upright, depth, notes)
    rgb, icc, managed = _to_rgb(colour, icc, notes)
    if managed:  # colours now sRGB: the source's gamma/chromaticities no longer describe them
        png_colour = {}
    return LoadedImage(
        pixels=_levels_view(np.asarray(rgb)) if levels else uint8_to_pixels(np.asarray(rgb)),
        alpha=alpha,
        icc_profile=icc,
        exif=exif,
        text=text,
        xmp=_xmp_upright(xmp) if xmp is not None else None,
        iptc=iptc,
        dpi=dpi,
        png_colour=png_colour,
        name=safe_stem(name),
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# metadata


def _metadata(image: Image.Image, png_text: _PngText | None, notes: list[str]) -> tuple[dict[str, str], bytes | None, bytes | None]:
    """-> (PNG text chunks to write, XMP packet, IPTC-IIM records) from a decoded image."""
    if png_text is not None:
        text = dict(png_text.text)
        notes.extend(png_text.notes)
    else:  # a PIL image the caller opened (Pillow parsed its text), or a format without text chunks
        text = {key: value for key, value in getattr(image, "text", {}).items() if isinstance(value, str)}
    for key in _EXIF_TEXT_KEYS:  # copies of the EXIF: it is written re-serialised instead
        text.pop(key, None)
    xmp = _xmp(image, text.pop(XMP_KEY, None), notes)
    comment = image.info.get("comment")  # JPEG COM, GIF comment extension
    if comment and "Comment" not in text and image.format != "PNG":
        raw = comment if isinstance(comment, bytes) else str(comment).encode("utf-8")
        try:
            text["Comment"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            text["Comment"] = raw.decode("latin-1")
    iptc = _iptc(image, notes)
    return text, xmp, iptc


def _xmp(image: Image.Image, png_value: str | None, notes: list[str]) -> bytes | None:
    if png_value is not None:
        return png_value.encode("utf-8")
    value = image.info.get("xmp")
    if value is None and image.format == "TIFF":
        value = getattr(image, "tag_v2", {}).get(_TIFF_XMP)
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif isinstance(value, tuple):  # some TIFFs store XMP as a BYTE array
        value = bytes(value)
    if any(marker == "APP1" and data.startswith(b"http://ns.adobe.com/xmp/extension/\0")
           for marker, data in getattr(image, "applist", [])):
        notes.append("extended XMP (the part of a JPEG's XMP beyond 64 KB) dropped")
    if not value:
        return None
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        notes.append("XMP metadata dropped: it is not UTF-8, which PNG requires")
        return None
    return bytes(value)


def _xmp_upright(xmp: bytes) -> bytes:
    """The pixels are saved upright: an XMP ``tiff:Orientation`` other than 1 would turn them
    again in viewers that read it, so it is set to 1 (same length; nothing else changes)."""
    xmp = re.sub(rb'(tiff:Orientation\s*=\s*["\'])[2-8](["\'])', rb"\g<1>1\g<2>", xmp)
    return re.sub(rb"(<tiff:Orientation>\s*)[2-8](\s*</tiff:Orientation>)", rb"\g<1>1\g<2>", xmp)


def _iptc(image: Image.Image, notes: list[str]) -> bytes | None:
    """IPTC-IIM records from a JPEG's Photoshop APP13 block or a TIFF's IPTC tag."""
    value = None
    photoshop = image.info.get("photoshop")
    if isinstance(photoshop, dict):
        value = photoshop.get(_IPTC_RESOURCE)
    tags = getattr(image, "tag_v2", None)
    if value is None and tags is not None and image.format == "TIFF":
        value = tags.get(_TIFF_IPTC)
        if isinstance(value, tuple):  # stored as LONGs: back to the bytes in the file's byte order
            try:
                value = b"".join(struct.pack(f"{tags._endian}L", v) for v in value)
            except (struct.error, TypeError):
                notes.append("unreadable IPTC metadata dropped")
                value = None
    if not value:
        return None
    return bytes(value)


def _resolution(image: Image.Image) -> tuple[float, float] | None:
    dpi = image.info.get("dpi")
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    return (x, y) if all(math.isfinite(v) and v > 0 for v in (x, y)) else None


def _png_colour(image: Image.Image) -> dict[str, bytes]:
    """A PNG's gAMA / cHRM / sRGB chunks as raw data (Pillow reads them but never writes them back)."""
    info, chunks = image.info, {}
    try:
        if "gamma" in info:
            chunks["gAMA"] = struct.pack(">I", round(float(info["gamma"]) * 100000))
        if "chromaticity" in info and len(info["chromaticity"]) == 8:
            chunks["cHRM"] = struct.pack(">8I", *(round(float(v) * 100000) for v in info["chromaticity"]))
        if "srgb" in info:
            chunks["sRGB"] = bytes([int(info["srgb"])])
    except (TypeError, ValueError, struct.error, OverflowError):
        return {}
    return chunks


# ---------------------------------------------------------------------------------------------
# saving


def to_pil(original: LoadedImage, pixels: torch.Tensor) -> Image.Image:
    """Protected ``1×3×H×W`` pixels in ``[0, 1]`` -> 8-bit RGB, or RGBA with the original alpha.

    ICC, EXIF and the resolution are put in ``info`` too, so later ``save()`` calls keep them (text,
    XMP and IPTC need ``save_png``). Raises ImageError if ``pixels`` is not exactly the original's
    (upright) size.
    """
    _check_same_size(original, pixels)
    rows = pixels_to_uint8(pixels, channels=4 if original.alpha is not None else 3)
    if original.alpha is not None:
        rows[..., 3] = np.asarray(original.alpha)
    return _with_side_info(Image.fromarray(rows, "RGBA" if original.alpha is not None else "RGB"), original)


def _check_same_size(original: LoadedImage, pixels: torch.Tensor) -> None:
    _check_pixels(pixels)
    height, width = pixels.shape[-2:]
    if (width, height) != (original.width, original.height):
        raise ImageError(
            f"protected pixels are {width}×{height} but the image is {original.width}×{original.height}; "
            "the output must keep the input size"
        )


def _with_side_info(image: Image.Image, original: LoadedImage) -> Image.Image:
    """``image`` with ``original``'s ICC profile, EXIF and resolution in its ``info`` (what Pillow's save writes)."""
    if original.icc_profile is not None:
        image.info["icc_profile"] = original.icc_profile
    if original.exif is not None:
        image.info["exif"] = original.exif
    if original.dpi is not None:
        image.info["dpi"] = original.dpi
    return image


def _iptc_raw_profile(iptc: bytes) -> str:
    """IPTC-IIM as the "Raw profile type iptc" text ImageMagick writes and ExifTool reads: a newline,
    the profile name, the byte count in 8 columns, then hex, 72 digits a line. The records are
    wrapped in a Photoshop resource block (resource 0x0404), as ExifTool itself writes them."""
    block = b"8BIM" + struct.pack(">H", _IPTC_RESOURCE) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc
    block += b"\0" * (len(block) % 2)
    digits = block.hex()
    lines = "\n".join(digits[i : i + 72] for i in range(0, len(digits), 72))
    return f"\niptc\n{len(block):8d}\n{lines}\n"


def _worth_compressing(value: str) -> bool:
    """Compress text over 1 KB, but not past Pillow's per-chunk inflate limit: larger chunks are
    written uncompressed, so Pillow (and readers with the same bomb guard) can read them back."""
    return 1024 < len(value.encode("utf-8")) <= PngImagePlugin.MAX_TEXT_CHUNK // 2


def png_info(original: LoadedImage) -> PngImagePlugin.PngInfo:
    """The chunks ``save_png`` adds besides pixels, ICC, EXIF and resolution: text, XMP, IPTC and
    the PNG colour chunks of ``original``."""
    info = PngImagePlugin.PngInfo()
    for kind in ("cICP", "gAMA", "cHRM", "sRGB"):  # Pillow leaves sRGB out itself when an ICC profile is written
        if kind in original.png_colour:
            info.add(kind.encode("ascii"), original.png_colour[kind])
    for key, value in original.text.items():
        if key == XMP_KEY and original.xmp is not None or key == IPTC_KEY and original.iptc is not None:
            continue
        compress = _worth_compressing(value)
        if isinstance(value, PngImagePlugin.iTXt):
            info.add_itxt(key, value, str(value.lang or ""), str(value.tkey or ""), zip=compress)
        else:
            info.add_text(key, value, zip=compress)  # iTXt when the value is not Latin-1
    if original.xmp is not None:
        info.add_itxt(XMP_KEY, original.xmp.decode("utf-8"), "", "", zip=False)  # XMP convention: uncompressed
    if original.iptc is not None:
        profile = _iptc_raw_profile(original.iptc)
        info.add_text(IPTC_KEY, profile, zip=_worth_compressing(profile))
    return info


def save_png(original: LoadedImage, pixels: torch.Tensor, destination: str | os.PathLike | BinaryIO) -> None:
    """Write protected pixels (``1×3×H×W`` float in [0, 1], or uint8 levels) as an 8-bit PNG (RGBA if the input had
    alpha) of the input's upright size, with its ICC profile, EXIF, text chunks, XMP, IPTC, resolution and PNG colour
    chunks. Always PNG, whatever the destination's suffix. The file is written as it is encoded (a path: removed
    again if encoding fails), so the whole PNG never sits in memory."""
    if not isinstance(destination, (str, os.PathLike)):
        _write_png(original, pixels, destination.write)
        return
    _check_same_size(original, pixels)  # before the file is created
    try:
        with open(destination, "wb") as handle:
            _write_png(original, pixels, handle.write)
    except BaseException:
        Path(destination).unlink(missing_ok=True)
        raise


def png_bytes(original: LoadedImage, pixels: torch.Tensor) -> bytes:
    """``save_png`` into memory."""
    parts: list[bytes] = []
    _write_png(original, pixels, parts.append)
    return b"".join(parts)


def _write_png(original: LoadedImage, pixels: torch.Tensor, write: Callable[[bytes], object]) -> None:
    """The PNG of ``save_png``, chunk by chunk through ``write``.

    The pixels are written by our own encoder, the metadata chunks by Pillow. Measured on a protected 4096×3072 photo
    (benchmarks/png_writers.py, under load): Pillow at compress_level 1 took 3.4 s for 11.2 MB, most of it in its
    per-row adaptive filter choice (level 0, no compression, still 2.2 s); the "Up" filter for every row, computed
    with numpy, and DEFLATE level 1 by ISA-L (the ``isal`` package) took 0.33 s for 10.3 MB, by zlib 1.2 s for 10.9 MB.
    Pillow still writes every other chunk: it saves a 1×1 image with the same mode and side information, and its
    chunks before and after the image data are spliced around ours, byte for byte as Pillow would have written them."""
    _check_same_size(original, pixels)
    image = _with_side_info(Image.new("RGBA" if original.alpha is not None else "RGB", (1, 1)), original)
    small = io.BytesIO()
    image.save(small, format="PNG", pnginfo=png_info(original), **image.info)
    before, after = _pillow_chunks(small.getvalue())
    channels = 4 if original.alpha is not None else 3
    header = struct.pack(">IIBBBBB", original.width, original.height, 8, 6 if channels == 4 else 2, 0, 0, 0)
    write(PNG_SIGNATURE)
    write(_chunk(b"IHDR", header))
    for chunk in before:
        write(chunk)
    alpha = np.asarray(original.alpha) if original.alpha is not None else None
    for chunk in _idat_chunks(pixels, alpha):
        write(chunk)
    for chunk in after:
        write(chunk)
    write(_chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes | memoryview) -> bytes:
    return b"".join((struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))))


def _pillow_chunks(png: bytes) -> tuple[list[bytes], list[bytes]]:
    """The chunks (whole, length to CRC) of a PNG Pillow wrote, besides IHDR, IDAT and IEND: (before the image data,
    after it)."""
    before: list[bytes] = []
    after: list[bytes] = []
    position, seen_data = len(PNG_SIGNATURE), False
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        end = position + 12 + length
        if kind == b"IDAT":
            seen_data = True
        elif kind not in (b"IHDR", b"IEND"):
            (after if seen_data else before).append(png[position:end])
        position = end
    return before, after


# The DEFLATE implementation: ISA-L where the isal package is installed (3–4× faster than zlib at level 1, and a
# smaller file on our images), zlib otherwise. Both read the same calls.
try:
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - isal is in requirements.txt; zlib keeps a bare install working
    _deflate = zlib

_IDAT_BYTES = 1 << 20  # IDAT chunk size: readers take any; a MiB keeps each chunk's CRC pass cheap
# The PNG writer converts, filters and compresses this many rows at a time: its memory is a few blocks (≈ 4 MB at
# 7296 px wide with alpha), not whole-image arrays (three of them, 0.46 GB at 40 MP, before).
_PNG_BLOCK_ROWS = 128


@dataclass
class _Deflated:
    """One part of the image data, compressed: its DEFLATE pieces, and the Adler-32 and length of what went in."""

    pieces: list[bytes]
    adler: int
    length: int


def _idat_chunks(pixels: torch.Tensor, alpha: np.ndarray | None) -> Iterator[bytes]:
    """The image data of ``1×3×H×W`` pixels (float in [0, 1] or uint8 levels) and the alpha (H×W uint8 or None) as
    IDAT chunks: every row filtered with PNG's "Up" filter (type 2: the difference to the row above, modulo 256, the
    first row against zeros), DEFLATE level ``PNG_COMPRESS_LEVEL`` in one zlib stream, split into chunks.

    The rows are converted, filtered and compressed ``_PNG_BLOCK_ROWS`` at a time. Large images are compressed in two
    halves on two threads (both DEFLATE implementations release the GIL): each half a raw DEFLATE stream, the first
    ended by a sync flush (byte-aligned, not final), so that their concatenation is one valid stream, as pigz does;
    the zlib checksum of the whole data is combined from the halves' (:func:`_adler32_combine`)."""
    height, width = pixels.shape[-2:]
    channels = 3 if alpha is None else 4
    parts = 2 if height >= 2 and height * (width * channels + 1) >= 8 << 20 and (os.cpu_count() or 1) > 1 else 1
    cut = [height * i // parts for i in range(parts + 1)]

    def deflate(i: int) -> _Deflated:
        compressor = _deflate.compressobj(PNG_COMPRESS_LEVEL, _deflate.DEFLATED, -15)
        done = _Deflated([], 1, 0)
        for start in range(cut[i], cut[i + 1], _PNG_BLOCK_ROWS):
            stop = min(cut[i + 1], start + _PNG_BLOCK_ROWS)
            first = max(0, start - 1)  # the row above the block: the Up filter's reference
            block = np.empty((stop - first, width, channels), dtype=np.uint8)
            _rows_to_uint8(pixels, first, stop, block)
            if alpha is not None:
                block[..., 3] = alpha[first:stop]
            rows = block.reshape(stop - first, -1)
            filtered = np.empty((stop - start, rows.shape[1] + 1), dtype=np.uint8)
            filtered[:, 0] = 2
            if start == 0:
                filtered[0, 1:] = rows[0]
                np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
            else:
                np.subtract(rows[1:], rows[:-1], out=filtered[:, 1:])
            data = memoryview(filtered).cast("B")
            done.adler, done.length = zlib.adler32(data, done.adler), done.length + len(data)
            done.pieces.append(compressor.compress(data))
        done.pieces.append(compressor.flush(_deflate.Z_FINISH if i == parts - 1 else _deflate.Z_SYNC_FLUSH))
        return done

    if parts == 1:
        halves = [deflate(0)]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(parts) as pool:
            halves = list(pool.map(deflate, range(parts)))
    adler = halves[0].adler
    for half in halves[1:]:
        adler = _adler32_combine(adler, half.adler, half.length)
    pieces = (b"\x78\x01", *(piece for half in halves for piece in half.pieces), struct.pack(">I", adler))  # zlib header: DEFLATE, 32 KiB window
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        while len(buffer) >= _IDAT_BYTES:
            yield _chunk(b"IDAT", bytes(buffer[:_IDAT_BYTES]))
            del buffer[:_IDAT_BYTES]
    if buffer:
        yield _chunk(b"IDAT", bytes(buffer))


_ADLER_BASE = 65521


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings one after the other from each one's own and the second's length (zlib's
    ``adler32_combine``, which Python's zlib does not expose)."""
    remainder = second_length % _ADLER_BASE
    low = ((first & 0xFFFF) + (second & 0xFFFF) + _ADLER_BASE - 1) % _ADLER_BASE
    high = (remainder * (first & 0xFFFF) + (first >> 16) + (second >> 16) + _ADLER_BASE - remainder) % _ADLER_BASE
    return low | high << 16
