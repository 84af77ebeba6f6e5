"""The edge between image files (or PIL images) and float tensors.

``load_image`` turns a file, bytes, a binary file object or a PIL image into a
``LoadedImage``: upright RGB pixels as a ``1×3×H×W`` float32 tensor in ``[0, 1]`` (every value
exactly ``k/255``) plus what must survive protection untouched (alpha, ICC profile, EXIF).
``save_png`` writes protected pixels back as an 8-bit PNG of the same size with that side
information re-attached. Every refusal is an ``ImageError`` whose message is one readable line.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS: int = 40_000_000
MAX_PIXELS_ENV = "FASTPROTECT_MAX_PIXELS"
MIN_SIDE = 8  # the SD VAE maps each 8×8 patch to one latent pixel: smaller leaves nothing to protect
# zlib level for written PNGs. The protective noise makes higher levels buy little: at 1 a 2048² file is
# ~15 % larger than at Pillow's default 6 but encodes ~3.5× faster (benchmarks/ablate_speed.py).
PNG_COMPRESS_LEVEL = 1
# Formats we decode (AVIF only where Pillow has it). Restricting Image.open keeps untrusted
# uploads away from plugins that run external programs (EPS calls Ghostscript).
FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
_ORIENTATION = 0x0112  # EXIF tag


class ImageError(ValueError):
    """Bad or refused input. ``str(error)`` is one line a user can read (no traceback text)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # decoder messages may hold newlines


@dataclass(eq=False)  # eq=False: comparing tensors field by field has no single truth value
class LoadedImage:
    """An image ready for protection, plus the side information ``save_png`` writes back.

    pixels: ``1×3×H×W`` float32 in ``[0, 1]``, upright (EXIF orientation applied), values ``k/255``.
    alpha: the original alpha channel (mode ``"L"``, size ``W×H``), or None; never modified.
    icc_profile / exif: raw bytes written back into the PNG (EXIF orientation reset to 1).
    name: stem of the source file name, ``"image"`` if unknown.
    notes: conversions a user should know about, e.g. ``"CMYK converted to RGB"``.
    """

    pixels: torch.Tensor = field(repr=False)
    alpha: Image.Image | None = field(default=None, repr=False)
    icc_profile: bytes | None = field(default=None, repr=False)
    exif: bytes | None = field(default=None, repr=False)
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


def pixels_to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """``1×3×H×W`` float in ``[0, 1]`` (any device) -> ``H×W×3`` uint8, rounded to nearest.

    Values outside ``[0, 1]`` are clamped (float error at the ends is expected); NaN or
    infinity is a bug upstream and raises ValueError rather than writing garbage.
    """
    _check_pixels(pixels)
    pixels = pixels.detach().to("cpu", torch.float32)
    if not torch.isfinite(pixels).all():
        raise ValueError("pixels contain NaN or infinity")
    levels = (pixels[0].clamp(0, 1) * 255).round().to(torch.uint8)  # 3×H×W
    return levels.permute(1, 2, 0).contiguous().numpy()


def uint8_to_pixels(array: np.ndarray) -> torch.Tensor:
    """``H×W×3`` uint8 -> ``1×3×H×W`` float32 in ``[0, 1]``, values exactly ``k/255`` (CPU)."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"array must be H×W×3 uint8, got {array.shape} {array.dtype}")
    levels = torch.from_numpy(np.array(array, copy=True))  # copy: PIL arrays are read-only
    return levels.permute(2, 0, 1).unsqueeze(0).contiguous().to(torch.float32) / 255


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


def unique_stem(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``, … if a case-insensitive equal one is in ``used`` (then added).

    Outputs of one batch (CLI folder or Space ZIP) never overwrite each other, also on
    case-insensitive file systems and ZIP extractors (``A.jpg`` and ``a.png`` both give ``a…``)."""
    candidate, counter = stem, 1
    while candidate.lower() in used:
        counter += 1
        candidate = f"{stem}_{counter}"
    used.add(candidate.lower())
    return candidate


def _max_pixels(max_pixels: int | None) -> int:
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV)
        if raw is None:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw)
        except ValueError:
            raise ValueError(f"{MAX_PIXELS_ENV} must be a positive integer, got {raw!r}") from None
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    return max_pixels


def _available_formats() -> list[str]:
    Image.init()  # registers the plugins; done here, not at import, to keep the import cheap
    return [f for f in FORMATS if f in Image.OPEN]


def _open(source: str | os.PathLike | bytes | BinaryIO, limit: int) -> tuple[Image.Image, str | None]:
    """Open lazily (header only) -> (image, the source's file name without its folder, if any)."""
    file_name: str | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        file_name = path.name
        if not path.is_file():
            raise ImageError(f"file not found: {file_name!r}")
        if path.stat().st_size == 0:
            raise ImageError(f"empty file: {file_name!r}")
        fp: Path | BinaryIO = path
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty file: no image data")
        fp = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        file_name = Path(str(getattr(source, "name", ""))).name or None
        fp = source
    else:
        raise TypeError(f"cannot load an image from {type(source).__name__}")
    label = repr(file_name) if file_name else "(uploaded data)"  # never a full path: it may be a server's
    formats = _available_formats()
    try:
        return Image.open(fp, formats=formats), file_name
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
    """True for 16-bit sources. Pillow decodes 16-bit RGB(A) PNGs straight to 8-bit "RGB"/"RGBA"
    (keeping the high byte); only the pending decoder tile (rawmode "RGB;16B") still tells us."""
    return image.mode.startswith("I") or any(";16" in str(tile.args) for tile in getattr(image, "tile", []))


def _upright(image: Image.Image, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    """-> (new upright image, EXIF bytes to write back). Never modifies ``image``.

    EXIF is always re-serialised by Pillow: orientation becomes 1 (pixels are upright now) and
    the IFD1 thumbnail, an unprotected copy of the picture, is left out.
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
        fresh.load(exif.tobytes())
        if _ORIENTATION in fresh:
            fresh[_ORIENTATION] = 1
        if orientation in range(2, 9):
            notes.append(f"EXIF orientation applied (tag value {orientation}); the result is saved upright")
        return upright, fresh.tobytes()
    except Exception:  # corrupt metadata should not cost the user their picture
        notes.append("unreadable EXIF metadata dropped")
        return image.copy(), None


def _split_alpha(image: Image.Image, notes: list[str]) -> tuple[Image.Image, Image.Image | None]:
    """-> (colour image without alpha, in L/RGB/CMYK/...; alpha as mode "L" or None)."""
    mode, colour_key = image.mode, "transparency" in image.info
    if mode.startswith("I"):
        return _reduce_16_bit(image)
    if mode == "F":
        raise ImageError("32-bit floating-point image: not supported, save it as 8- or 16-bit")
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


def _reduce_16_bit(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """I;16* / I greyscale -> (L, alpha). Rounds v/257 so 8-bit data stored as 16-bit (k·257)
    comes back exactly; Pillow's own convert("L") would clip everything above 255 to white."""
    values = np.asarray(image).astype(np.int64)  # "I" is treated as 16-bit: clipped to 0..65535
    grey = ((np.clip(values, 0, 65535) + 128) // 257).astype(np.uint8)
    alpha = None
    if "transparency" in image.info:  # Pillow's colour-key conversion is wrong for 16-bit values
        alpha = Image.fromarray(np.where(values == image.info["transparency"], 0, 255).astype(np.uint8))
    return Image.fromarray(grey), alpha


def _is_rgb_profile(icc: bytes) -> bool:
    return icc[16:20] == b"RGB "  # ICC header: data colour space signature at bytes 16-19


def _to_rgb(image: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bytes | None]:
    """Colour image (no alpha) -> (RGB image, ICC profile that is valid for it, or None)."""
    if image.mode == "RGB":
        if icc is not None and not _is_rgb_profile(icc):
            notes.append("ICC profile dropped: it does not describe RGB data")
            icc = None
        return image, icc
    label = {"L": "greyscale image", "CMYK": "CMYK"}.get(image.mode, f"{image.mode} image")
    if icc is not None and not _is_rgb_profile(icc):
        # The profile describes the source colour space (CMYK, grey); convert through it to sRGB
        # and drop it, since it cannot describe RGB output (viewers assume sRGB without one).
        converted = _icc_to_srgb(image, icc)
        if converted is not None:
            notes.append(f"{label} converted to RGB (sRGB) through its ICC profile, which is not kept")
            return converted, None
        notes.append("ICC profile dropped: it could not be applied")
        icc = None
    try:
        converted = image.convert("RGB")
    except ValueError:
        raise ImageError(f"unsupported image mode {image.mode}: save it as RGB") from None
    notes.append(f"{label} converted to RGB")
    return converted, icc


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
) -> LoadedImage:
    """Load a still image as upright RGB pixels (``1×3×H×W`` float32, ``[0, 1]``) + side info.

    ``max_pixels`` defaults to ``$FASTPROTECT_MAX_PIXELS`` or ``DEFAULT_MAX_PIXELS``; ``name``
    (a file name; its stem is kept) overrides the name taken from the source.
    Raises ImageError for anything that is not a single still image we can protect.
    """
    limit = _max_pixels(max_pixels)
    if isinstance(source, Image.Image):
        file_name = Path(getattr(source, "filename", "") or "").name or None
        return _load_opened(source, limit, name or file_name)
    image, file_name = _open(source, limit)
    with image:  # closes files we opened; a caller's file object is left open
        return _load_opened(image, limit, name or file_name)


def _load_opened(image: Image.Image, limit: int, name: str | None) -> LoadedImage:
    notes: list[str] = []
    _check_size(image, limit)
    try:
        _check_frames(image, notes)
        sixteen_bit = _is_16_bit(image)  # must look before load(), which clears the tile
        image.load()  # decode now: truncated data raises here (ImageFile.LOAD_TRUNCATED_IMAGES is False)
    except (ImageError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(_bomb_message(error, limit)) from None
    except Exception as error:  # any decoder failure on untrusted bytes is bad input, not a bug
        raise ImageError(f"cannot decode image {repr(name) if name else '(uploaded data)'}: {error}") from None
    if sixteen_bit:
        notes.append("16-bit image reduced to 8 bits per channel")
    icc = image.info.get("icc_profile") or None
    upright, exif = _upright(image, notes)
    colour, alpha = _split_alpha(upright, notes)
    rgb, icc = _to_rgb(colour, icc, notes)
    return LoadedImage(
        pixels=uint8_to_pixels(np.asarray(rgb)),
        alpha=alpha,
        icc_profile=icc,
        exif=exif,
        name=Path(name or "").stem or "image",
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# saving


def to_pil(original: LoadedImage, pixels: torch.Tensor) -> Image.Image:
    """Protected ``1×3×H×W`` pixels in ``[0, 1]`` -> 8-bit RGB, or RGBA with the original alpha.

    ICC and EXIF are put in ``info`` too, so later ``save()`` calls keep them. Raises ImageError
    if ``pixels`` is not exactly the original's (upright) size.
    """
    _check_pixels(pixels)
    height, width = pixels.shape[-2:]
    if (width, height) != (original.width, original.height):
        raise ImageError(
            f"protected pixels are {width}×{height} but the image is {original.width}×{original.height}; "
            "the output must keep the input size"
        )
    image = Image.fromarray(pixels_to_uint8(pixels))
    if original.alpha is not None:
        image = Image.merge("RGBA", (*image.split(), original.alpha))
    if original.icc_profile is not None:
        image.info["icc_profile"] = original.icc_profile
    if original.exif is not None:
        image.info["exif"] = original.exif
    return image


def save_png(original: LoadedImage, pixels: torch.Tensor, destination: str | os.PathLike | BinaryIO) -> None:
    """Write protected pixels as an 8-bit PNG (RGBA if the input had alpha) of the input's
    upright size, with its ICC profile and EXIF. Always PNG, whatever the destination's suffix."""
    image = to_pil(original, pixels)
    # info: exactly the icc_profile and exif to write
    image.save(destination, format="PNG", compress_level=PNG_COMPRESS_LEVEL, **image.info)


def png_bytes(original: LoadedImage, pixels: torch.Tensor) -> bytes:
    """``save_png`` into memory."""
    buffer = io.BytesIO()
    save_png(original, pixels, buffer)
    return buffer.getvalue()
