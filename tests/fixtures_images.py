"""Builders for image files that Pillow cannot (or will not) write directly: 16-bit RGB PNGs,
PNG headers that lie about their size, a tiny CMYK ICC profile, raw PNG text chunks, JPEG IPTC
(APP13), 32-bit integer and float TIFFs. All in memory, no binary fixtures."""

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


def png_with_chunks(image: Image.Image | bytes, *chunks: tuple[bytes, bytes], after_idat: bool = False) -> bytes:
    """``image`` as PNG (or PNG bytes) with raw ``(type, data)`` chunks (CRC computed) inserted right
    after IHDR, or right before IEND."""
    data = image if isinstance(image, bytes) else encode(image, "PNG")
    assert data[12:16] == b"IHDR"
    extra = b"".join(_chunk(kind, body) for kind, body in chunks)
    if after_idat:
        return data[:-12] + extra + data[-12:]  # IEND is the last 12 bytes
    return data[:33] + extra + data[33:]


def ztxt(keyword: str, text: bytes) -> tuple[bytes, bytes]:
    return b"zTXt", keyword.encode("latin-1") + b"\0\0" + zlib.compress(text, 9)


def itxt(keyword: str, text: str, lang: str = "", tkey: str = "", compressed: bool = False) -> tuple[bytes, bytes]:
    body = text.encode("utf-8")
    body = zlib.compress(body, 9) if compressed else body
    header = keyword.encode("latin-1") + b"\0" + bytes([int(compressed), 0]) + lang.encode() + b"\0" + tkey.encode() + b"\0"
    return b"iTXt", header + body


def text_chunk(keyword: str, text: str) -> tuple[bytes, bytes]:
    return b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1")


def xmp_packet(rights: str = "© 2024 Jane Doe, all rights reserved", orientation: int | None = None) -> bytes:
    """A small XMP packet with a dc:rights (and a tiff:Orientation attribute if given)."""
    tiff = f' xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}"' if orientation else ""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"{tiff}>'
        f'<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">{rights}</rdf:li></rdf:Alt></dc:rights>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def iptc_records(copyright: str = "(c) Jane Doe", byline: str = "Jane Doe") -> bytes:
    """IPTC-IIM: record version, by-line (2:80) and copyright notice (2:116)."""
    def dataset(number: int, value: bytes) -> bytes:
        return b"\x1c\x02" + bytes([number]) + struct.pack(">H", len(value)) + value

    return dataset(0, b"\x00\x04") + dataset(80, byline.encode()) + dataset(116, copyright.encode())


def jpeg_with_iptc(image: Image.Image, iptc: bytes, **params) -> bytes:
    """A JPEG with a Photoshop APP13 segment holding ``iptc`` (resource 0x0404), which Pillow cannot write."""
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc + b"\0" * (len(iptc) % 2)
    app13 = b"Photoshop 3.0\x00" + resource
    data = encode(image, "JPEG", **params)
    return data[:2] + b"\xff\xed" + struct.pack(">H", len(app13) + 2) + app13 + data[2:]


def tiff(values: np.ndarray, bits: int, sample_format: int = 1, extra_tags: tuple = ()) -> bytes:
    """An uncompressed single-strip little-endian TIFF from H×W (grey) or H×W×3 values, with
    BitsPerSample ``bits`` and SampleFormat ``sample_format`` (1 unsigned, 2 signed, 3 float):
    the 32-bit integer kinds Pillow reads but cannot write. ``extra_tags``: (tag, type, values),
    type 2 (ASCII, a str) or 3 (SHORT) or 4 (LONG)."""
    values = np.asarray(values)
    height, width = values.shape[:2]
    channels = 1 if values.ndim == 2 else values.shape[2]
    dtype = {(1, 8): "<u1", (1, 16): "<u2", (1, 32): "<u4", (2, 16): "<i2", (2, 32): "<i4", (3, 32): "<f4"}[sample_format, bits]
    pixels = values.astype(dtype).tobytes()
    tags = [
        (256, 4, [width]), (257, 4, [height]), (258, 3, [bits] * channels), (259, 3, [1]),
        (262, 3, [1 if channels == 1 else 2]), (273, 4, [0]), (277, 3, [channels]), (278, 4, [height]),
        (279, 4, [len(pixels)]), (339, 3, [sample_format] * channels), *extra_tags,
    ]
    tags.sort(key=lambda tag: tag[0])
    table_end = 8 + 2 + 12 * len(tags) + 4
    entries, overflow = b"", b""
    for tag, kind, value in tags:
        payload = (value.encode() + b"\0") if kind == 2 else b"".join(struct.pack("<H" if kind == 3 else "<I", v) for v in value)
        count = len(payload) if kind == 2 else len(value)
        if tag == 273:  # StripOffsets: the pixels follow the overflow area; patched below
            payload = b"\0\0\0\0"
        if len(payload) <= 4:
            entries += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\0")
        else:
            entries += struct.pack("<HHII", tag, kind, count, table_end + len(overflow))
            overflow += payload + b"\0" * (len(payload) % 2)
    data = bytearray(b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries + b"\0\0\0\0" + overflow)
    index = [tag for tag, _, _ in tags].index(273)
    struct.pack_into("<I", data, 10 + 12 * index + 8, len(data))
    return bytes(data) + pixels
