"""Builders for image files that Pillow cannot (or will not) write directly: 16-bit RGB PNGs,
PNG headers that lie about their size, a tiny CMYK ICC profile. All in memory, no binary fixtures."""

from __future__ import annotations

import io
import itertools
import struct
import zlib

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """H×W×3 uint8 noise."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encode(image: Image.Image, format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_16_bit(values: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG from H×W (grey, type 0) or H×W×C uint16 values (2: RGB, 4: LA, 6: RGBA)."""
    height, width = values.shape[:2]
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))  # filter 0
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def png_claiming_size(width: int, height: int) -> bytes:
    """A real 8×8 PNG whose IHDR (CRC fixed up) claims width×height: a decompression-bomb header."""
    data = bytearray(encode(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over type + 13 data bytes
    return bytes(data)


def exif_with_thumbnail(orientation: int, thumbnail: bytes) -> bytes:
    """Raw big-endian EXIF: IFD0 holds the orientation, IFD1 points at an embedded thumbnail
    (Pillow can read such EXIF but not write it)."""
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 26)
    ifd1 = struct.pack(">H", 2) + struct.pack(">HHII", 0x0201, 4, 1, 56) + struct.pack(">HHII", 0x0202, 4, 1, len(thumbnail))
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd0 + ifd1 + struct.pack(">I", 0)
    assert len(tiff) == 56
    return b"Exif\x00\x00" + tiff + thumbnail


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def inverted_k_cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK -> Lab profile (lut8 A2B0) with the lightness L* = 100·K, so it
    maps CMYK (0, 0, 0, 0) to black where a plain conversion gives white: proof it was applied."""
    # CLUT: 2 grid points per input channel, first channel slowest; Lab encoded as L·2.55, a+128, b+128.
    clut = b"".join(bytes([255 * k, 128, 128]) for _c, _m, _y, k in itertools.product((0, 1), repeat=4))
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity + bytes(range(256)) * 4 + clut + bytes(range(256)) * 3
    d50 = _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    text = b"test CMYK\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    tags = [(b"A2B0", lut), (b"wtpt", b"XYZ " + bytes(4) + d50), (b"desc", desc)]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = struct.pack(">I", offset + len(body)) + bytes(4) + bytes([2, 0x10, 0, 0]) + b"prtr" + b"CMYK" + b"Lab "
    header += bytes(12) + b"acsp" + bytes(24) + struct.pack(">I", 0) + d50
    return header + bytes(128 - len(header)) + struct.pack(">I", len(tags)) + table + body


def srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def animated(format: str, frames: int = 3, size: tuple[int, int] = (16, 16)) -> bytes:
    images = [Image.new("RGB", size, (40 * i, 255 - 40 * i, 0)) for i in range(frames)]
    return encode(images[0], format, save_all=True, append_images=images[1:], duration=100, loop=0)
