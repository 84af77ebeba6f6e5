"""fastprotect.images: loading every kind of input, refusing bad ones, writing PNGs back exactly."""

from __future__ import annotations

import io
import struct
import tracemalloc
import unicodedata
import zlib

import numpy as np
import pytest
import torch
from fixtures_images import (
    PNG_SIGNATURE,
    animated,
    encode,
    exif_with_thumbnail,
    inverted_k_cmyk_profile,
    iptc_records,
    itxt,
    jpeg_with_iptc,
    png_16_bit,
    png_claiming_size,
    png_with_chunks,
    random_rgb,
    srgb_profile,
    text_chunk,
    tiff,
    xmp_packet,
    ztxt,
)
from PIL import Image, ImageCms, ImageFile

from fastprotect import images
from fastprotect.images import (
    MIN_SIDE,
    ImageError,
    LoadedImage,
    load_image,
    pixels_to_uint8,
    png_bytes,
    save_png,
    to_pil,
    uint8_to_pixels,
)


def reload(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def refusal(source, **kwargs) -> str:
    """The ImageError message for ``source``, checked to be one line."""
    with pytest.raises(ImageError) as caught:
        load_image(source, **kwargs)
    message = str(caught.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


# --- sources ------------------------------------------------------------------------------------


def test_loads_from_path_bytes_file_object_and_pil(tmp_path):
    array = random_rgb(12, 20)
    path = tmp_path / "photo.png"
    Image.fromarray(array).save(path)
    data = path.read_bytes()
    with open(path, "rb") as handle:
        from_file = load_image(handle)
        assert not handle.closed  # the caller's file stays the caller's
    loaded = {
        "path": load_image(path),
        "str": load_image(str(path)),
        "bytes": load_image(data),
        "file": from_file,
        "pil": load_image(Image.fromarray(array)),
    }
    expected = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    for source, image in loaded.items():
        assert torch.equal(image.pixels, expected), source
        assert (image.width, image.height) == (20, 12)
        assert image.notes == [] and image.alpha is None and image.exif is None
    assert [loaded[k].name for k in ("path", "str", "bytes", "file", "pil")] == ["photo", "photo", "image", "photo", "image"]
    assert load_image(data, name="uploads/holiday.v2.jpg").name == "holiday.v2"
    with Image.open(path) as opened:
        assert load_image(opened).name == "photo"  # a PIL image opened from a file keeps its name


def test_pixels_are_float32_on_the_8_bit_grid():
    image = load_image(Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).convert("RGB"))
    assert image.pixels.dtype == torch.float32 and image.pixels.shape == (1, 3, 16, 16)
    assert image.pixels.is_contiguous()
    levels = np.arange(256, dtype=np.float32) / np.float32(255)
    assert np.array_equal(image.pixels[0, 1].flatten().numpy(), levels)


def test_png_round_trip_is_exact(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(random_rgb(33, 47, seed=3)).save(path)
    original = load_image(path)
    save_png(original, original.pixels, tmp_path / "out.png")
    again = load_image(tmp_path / "out.png")
    assert torch.equal(again.pixels, original.pixels)
    saved = reload((tmp_path / "out.png").read_bytes())
    assert (saved.format, saved.mode, saved.size) == ("PNG", "RGB", (47, 33))


def test_uint8_conversions():
    array = random_rgb(5, 7, seed=1)
    pixels = uint8_to_pixels(array)
    assert pixels.shape == (1, 3, 5, 7) and pixels.dtype == torch.float32
    assert np.array_equal(pixels_to_uint8(pixels), array)
    # round to nearest, clamp out-of-range values
    off_grid = torch.tensor([0.49 / 255, 0.51 / 255, 254.6 / 255, -0.2, 1.3, 0.5]).reshape(1, 3, 1, 2)
    assert pixels_to_uint8(off_grid).transpose(2, 0, 1).reshape(-1).tolist() == [0, 1, 255, 0, 255, 128]
    with pytest.raises(ValueError, match="NaN"):
        pixels_to_uint8(torch.full((1, 3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="1×3×H×W"):
        pixels_to_uint8(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="uint8"):
        uint8_to_pixels(array.astype(np.float32))


# --- EXIF orientation ----------------------------------------------------------------------------


def jpeg_with_orientation(orientation: int) -> bytes:
    """40 wide × 24 high as stored: left half red, right half blue; camera maker tag kept."""
    array = np.zeros((24, 40, 3), np.uint8)
    array[:, :20] = (255, 0, 0)
    array[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    return encode(Image.fromarray(array), "JPEG", exif=exif, quality=95)


@pytest.mark.parametrize("orientation, red_at", [(6, "top"), (8, "bottom")])
def test_exif_rotated_jpeg_comes_out_upright(orientation, red_at, tmp_path):
    image = load_image(jpeg_with_orientation(orientation))
    assert (image.width, image.height) == (24, 40)  # swapped relative to the stored 40×24
    red = image.pixels[0, 0]
    top, bottom = red[:20].mean().item(), red[20:].mean().item()
    assert (top > 0.9 and bottom < 0.1) if red_at == "top" else (bottom > 0.9 and top < 0.1)
    assert any("EXIF orientation" in note for note in image.notes)
    save_png(image, image.pixels, tmp_path / "out.png")
    saved = reload((tmp_path / "out.png").read_bytes())
    assert saved.size == (24, 40)
    exif = saved.getexif()
    assert exif[0x0112] == 1 and exif[0x010F] == "TestCam"  # orientation reset, other tags kept


def test_exif_thumbnail_is_not_carried_over():
    # The thumbnail is an unprotected copy of the picture: it must not travel with the output.
    thumbnail = b"UNPROTECTED-THUMBNAIL" * 4
    raw = exif_with_thumbnail(6, thumbnail)
    data = encode(Image.fromarray(random_rgb(16, 32)), "JPEG", exif=raw)
    assert thumbnail in data
    image = load_image(data)
    assert (image.width, image.height) == (16, 32)
    assert thumbnail not in image.exif and thumbnail not in png_bytes(image, image.pixels)
    exif = Image.Exif()
    exif.load(image.exif)
    assert exif[0x0112] == 1 and not exif.get_ifd(-1)  # -1: ExifTags.IFD.IFD1


def test_unreadable_exif_is_dropped_with_a_note():
    data = encode(Image.fromarray(random_rgb(16, 16)), "JPEG", exif=b"Exif\x00\x00MM\x00\x2a\x00\x00\xff\xff")
    with pytest.warns(UserWarning, match="Corrupt EXIF"):  # Pillow's own warning
        image = load_image(data)
    assert image.exif is None and image.notes == ["unreadable EXIF metadata dropped"]


def test_pil_input_with_exif_orientation_and_without_exif():
    plain = Image.fromarray(random_rgb(10, 30))
    assert load_image(plain).width == 30  # no file, no EXIF: loaded as is
    rotated = plain.copy()
    rotated.getexif()[0x0112] = 8
    image = load_image(rotated)
    assert (image.width, image.height) == (10, 30)
    assert rotated.size == (30, 10) and rotated.getexif()[0x0112] == 8  # caller's image untouched


def test_callers_pil_image_is_never_modified():
    palette = Image.fromarray(random_rgb(16, 16, seed=5)).convert("P")
    palette.info["transparency"] = 3
    exif = palette.getexif()
    exif[0x0112] = 6
    before = (palette.mode, palette.size, dict(palette.info), palette.tobytes(), palette.getpalette())
    loaded = load_image(palette)
    assert loaded.alpha is not None and loaded.width == 16
    after = (palette.mode, palette.size, dict(palette.info), palette.tobytes(), palette.getpalette())
    assert after == before and palette.getexif()[0x0112] == 6


# --- alpha ---------------------------------------------------------------------------------------


def _rgba_source() -> tuple[Image.Image, np.ndarray]:
    rgba = np.dstack([random_rgb(20, 24, seed=2), np.random.default_rng(9).integers(0, 256, (20, 24), np.uint8)])
    return Image.fromarray(rgba, "RGBA"), rgba[..., 3]


def _la_source() -> tuple[Image.Image, np.ndarray]:
    la = np.random.default_rng(4).integers(0, 256, (20, 24, 2), np.uint8)
    return Image.fromarray(la, "LA"), la[..., 1]


def _palette_source(table: bool) -> tuple[Image.Image, np.ndarray]:
    indices = np.random.default_rng(6).integers(0, 4, (20, 24), np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    image.info["transparency"] = bytes([0, 100, 255, 30]) if table else 2  # per-index table or one index
    alpha = np.array([0, 100, 255, 30] if table else [255, 255, 0, 255], np.uint8)[indices]
    return image, alpha


@pytest.mark.parametrize("kind", ["RGBA", "LA", "palette index", "palette table"])
def test_alpha_is_kept_bit_identical(kind, tmp_path):
    source, alpha = {
        "RGBA": _rgba_source,
        "LA": _la_source,
        "palette index": lambda: _palette_source(False),
        "palette table": lambda: _palette_source(True),
    }[kind]()
    path = tmp_path / "in.png"
    source.save(path)
    original = load_image(path)
    assert original.alpha is not None and original.alpha.mode == "L"
    assert np.array_equal(np.asarray(original.alpha), alpha)
    protected = 1 - original.pixels  # the RGB part changes...
    saved = reload(png_bytes(original, protected))
    assert saved.mode == "RGBA"
    assert np.array_equal(np.asarray(saved)[..., 3], alpha)  # ...the alpha does not
    assert np.array_equal(np.asarray(saved)[..., :3], pixels_to_uint8(protected))


@pytest.mark.parametrize("mode, key, pixel", [("L", 7, 7), ("RGB", (1, 2, 3), (1, 2, 3))])
def test_single_transparent_colour_becomes_alpha(mode, key, pixel):
    source = Image.new(mode, (8, 8), 200 if mode == "L" else (200, 200, 200))
    source.putpixel((3, 4), pixel)
    image = load_image(encode(source, "PNG", transparency=key))
    alpha = np.asarray(image.alpha)
    assert alpha[4, 3] == 0 and alpha.sum() == 255 * 63


# --- conversions ---------------------------------------------------------------------------------


def test_greyscale_becomes_rgb_with_a_note():
    grey = np.random.default_rng(7).integers(0, 256, (9, 11), np.uint8)
    image = load_image(encode(Image.fromarray(grey), "PNG"))
    assert np.array_equal(pixels_to_uint8(image.pixels), np.repeat(grey[..., None], 3, axis=2))
    assert image.notes == ["greyscale image converted to RGB"]


SIXTEEN_BIT = np.array([[0, 257, 65535, 128, 129, 30000, 257 * 200, 1000]] * 8, dtype=np.uint16)
ROUNDED = np.array([[0, 1, 255, 0, 1, 117, 200, 4]] * 8, dtype=np.uint8)  # round(v / 257)


def test_16_bit_greyscale_png_is_rounded_to_8_bits():
    image = load_image(png_16_bit(SIXTEEN_BIT, color_type=0))
    assert np.array_equal(pixels_to_uint8(image.pixels)[..., 0], ROUNDED)
    assert "16-bit image reduced to 8 bits per channel" in image.notes


def test_16_bit_greyscale_pil_modes():
    for source in (Image.fromarray(SIXTEEN_BIT), Image.fromarray(SIXTEEN_BIT.astype(np.int32))):  # "I;16", "I"
        image = load_image(source)
        assert np.array_equal(pixels_to_uint8(image.pixels)[..., 2], ROUNDED), source.mode
        assert "16-bit image reduced to 8 bits per channel" in image.notes


def test_16_bit_greyscale_colour_key_transparency():
    data = bytearray(png_16_bit(SIXTEEN_BIT, color_type=0))
    trns = b"\x00\x00\x00\x02tRNS\x75\x30" + zlib.crc32(b"tRNS\x75\x30").to_bytes(4, "big")  # 30000
    data[33:33] = trns  # right after IHDR
    image = load_image(bytes(data))
    assert np.array_equal(np.asarray(image.alpha), np.where(SIXTEEN_BIT == 30000, 0, 255))


def _rounded_16_bit(values: np.ndarray) -> np.ndarray:
    return ((values.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)


@pytest.mark.parametrize("container", ["PNG", "TIFF"])
def test_16_bit_rgb_is_rounded_to_8_bits_not_truncated(container):
    # Pillow alone decodes 48-bit colour by keeping each sample's high byte: 0x00FF (255) would become 0
    # where round(255 / 257) = 1, and 0xFF00 (65280) 255 where 254 is nearest.
    values = np.random.default_rng(16).integers(0, 65536, (24, 24, 3)).astype(np.uint16)
    assert (_rounded_16_bit(values) != values >> 8).mean() > 0.2  # a quarter differ: the check below can tell the two apart
    data = png_16_bit(values, color_type=2) if container == "PNG" else tiff(values, 16)
    image = load_image(data)
    assert np.array_equal(pixels_to_uint8(image.pixels), _rounded_16_bit(values))
    assert image.notes == ["16-bit image reduced to 8 bits per channel"]


def test_16_bit_rgba_rounds_colour_and_alpha(tmp_path):
    values = np.stack([SIXTEEN_BIT, SIXTEEN_BIT[:, ::-1], np.full_like(SIXTEEN_BIT, 65280)], axis=-1)
    rgba = np.dstack([values, np.full_like(SIXTEEN_BIT, 257 * 77 + 200)])  # alpha 77.8 -> 78, high byte 77
    (tmp_path / "deep.png").write_bytes(png_16_bit(rgba, color_type=6))
    image = load_image(tmp_path / "deep.png")  # from a path: the file is read twice, then closed
    assert np.array_equal(pixels_to_uint8(image.pixels), _rounded_16_bit(values))
    assert np.array_equal(np.asarray(image.alpha), np.full((8, 8), 78))


def test_16_bit_grey_alpha_keeps_the_high_byte_and_says_so():
    # Pillow has no little-endian "LA;16" unpacker, so the low bytes cannot be read back: the note says what happened.
    values = np.dstack([SIXTEEN_BIT, np.full_like(SIXTEEN_BIT, 65535)])
    image = load_image(png_16_bit(values, color_type=4))
    assert np.array_equal(pixels_to_uint8(image.pixels)[..., 0], (SIXTEEN_BIT >> 8).astype(np.uint8))
    assert "16-bit image reduced to 8 bits per channel (high byte of each sample kept)" in image.notes


def test_cmyk_jpeg_without_profile_is_converted_plainly():
    image = load_image(encode(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "JPEG", quality=95))
    assert pixels_to_uint8(image.pixels).min() >= 250  # no ink is white
    assert image.notes == ["CMYK converted to RGB"] and image.icc_profile is None


def test_cmyk_jpeg_with_profile_is_colour_managed_and_profile_dropped():
    data = encode(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "JPEG", quality=95, icc_profile=inverted_k_cmyk_profile())
    assert Image.open(io.BytesIO(data)).info["icc_profile"][16:20] == b"CMYK"
    image = load_image(data)
    assert pixels_to_uint8(image.pixels).max() <= 5  # the profile (L* = 100·K) says black
    assert image.icc_profile is None
    assert any(note.startswith("CMYK converted to RGB") and "ICC profile" in note for note in image.notes)


def test_rgb_icc_profile_is_written_back(tmp_path):
    profile = srgb_profile()
    image = load_image(encode(Image.fromarray(random_rgb(8, 8)), "PNG", icc_profile=profile))
    assert image.icc_profile == profile
    assert reload(png_bytes(image, image.pixels)).info["icc_profile"] == profile


def test_non_rgb_profile_on_rgb_data_is_dropped():
    bogus = b"\x00" * 16 + b"GRAY" + b"\x00" * 108
    image = load_image(encode(Image.fromarray(random_rgb(8, 8)), "PNG", icc_profile=bogus))
    assert image.icc_profile is None and any("ICC profile dropped" in note for note in image.notes)
    grey = load_image(encode(Image.new("L", (8, 8), 77), "PNG", icc_profile=bogus))  # unusable: plain conversion
    assert grey.icc_profile is None and pixels_to_uint8(grey.pixels).max() == 77
    assert grey.notes == ["ICC profile dropped: it could not be applied", "greyscale image converted to RGB"]


def test_palette_and_one_bit_images():
    palette = Image.fromarray(random_rgb(10, 10)).convert("P")
    image = load_image(encode(palette, "GIF"))
    assert image.alpha is None and image.notes == ["palette image converted to RGB"]
    assert np.array_equal(pixels_to_uint8(image.pixels), np.asarray(reload(encode(palette, "GIF")).convert("RGB")))
    bits = Image.fromarray(np.indices((10, 10)).sum(0) % 2 == 0)
    image = load_image(encode(bits, "PNG"))
    assert set(np.unique(pixels_to_uint8(image.pixels))) == {0, 255}
    assert image.notes == ["1-bit image expanded to 8-bit greyscale", "greyscale image converted to RGB"]


def test_webp_and_jpeg_inputs_load_and_output_is_png(tmp_path):
    array = random_rgb(16, 16, seed=8)
    webp = load_image(encode(Image.fromarray(array), "WEBP", lossless=True))
    assert np.array_equal(pixels_to_uint8(webp.pixels), array)
    jpeg = load_image(encode(Image.fromarray(np.full((16, 16, 3), 90, np.uint8)), "JPEG"))
    assert np.abs(pixels_to_uint8(jpeg.pixels).astype(int) - 90).max() <= 2
    assert png_bytes(webp, webp.pixels).startswith(PNG_SIGNATURE)
    save_png(jpeg, jpeg.pixels, tmp_path / "misnamed.jpg")  # the suffix does not change the format
    assert (tmp_path / "misnamed.jpg").read_bytes().startswith(PNG_SIGNATURE)


def test_multi_picture_jpeg_uses_the_main_picture():
    pictures = [Image.new("RGB", (16, 16), (200, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 200))]
    image = load_image(encode(pictures[0], "MPO", save_all=True, append_images=pictures[1:]))
    assert pixels_to_uint8(image.pixels)[..., 0].mean() > 190
    assert any("multi-picture" in note for note in image.notes)


# --- refusals ------------------------------------------------------------------------------------


def test_refuses_text_and_empty_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\nworld\n")
    assert refusal(tmp_path / "notes.txt").startswith("not an image: cannot identify image file 'notes.txt'")
    (tmp_path / "empty.png").write_bytes(b"")
    assert refusal(tmp_path / "empty.png") == "empty file: 'empty.png'"
    assert refusal(b"").startswith("empty file")
    assert refusal(io.BytesIO(b"")).startswith("not an image")
    assert refusal(tmp_path / "missing.png") == "file not found: 'missing.png'"
    assert str(tmp_path) not in refusal(tmp_path / "notes.txt")  # no server paths in messages


def test_refuses_formats_outside_the_allowed_list():
    icon = encode(Image.fromarray(random_rgb(16, 16)), "ICO")  # Pillow reads it, we do not
    assert refusal(icon).startswith("not an image")


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_refuses_truncated_jpeg_and_png(keep, tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for format in ("JPEG", "PNG"):
        data = encode(Image.fromarray(random_rgb(64, 64)), format)
        path = tmp_path / f"cut.{format.lower()}"
        path.write_bytes(data[: int(len(data) * keep)])
        message = refusal(path)
        assert message.startswith(("cannot decode image 'cut.", "cannot read image 'cut.")), message
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_refuses_huge_headers_before_decoding():
    # The files hold 8×8 pixels of data: had they been decoded, the error would be "truncated".
    assert refusal(png_claiming_size(30000, 30000)) == "image is 900.0 MP, over the 40.0 MP limit"  # Pillow's bomb check
    pillow_limit = 2 * Image.MAX_IMAGE_PIXELS / 1e6  # Pillow refuses outright above twice its warning size
    message = refusal(png_claiming_size(30000, 30000), max_pixels=10**10)
    assert message == f"image is 900.0 MP, over the {pillow_limit:.1f} MP limit"
    assert refusal(png_claiming_size(10000, 5000)) == "image is 10000×5000 = 50.0 MP, over the 40.0 MP limit"


def test_max_pixels_argument_and_environment(monkeypatch):
    data = encode(Image.fromarray(random_rgb(40, 50)), "PNG")
    assert load_image(data, max_pixels=2000).width == 50
    assert refusal(data, max_pixels=1999) == "image is 50×40 = 0.0 MP, over the 0.0 MP limit"
    monkeypatch.setenv("FASTPROTECT_MAX_PIXELS", "1000")
    assert "over the" in refusal(data)
    assert load_image(data, max_pixels=5000).height == 40  # the argument beats the environment
    monkeypatch.setenv("FASTPROTECT_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="FASTPROTECT_MAX_PIXELS"):
        load_image(data)
    assert images.DEFAULT_MAX_PIXELS == 40_000_000


@pytest.mark.parametrize("size", [(1, 1), (7, 100), (100, 7)])
def test_refuses_images_too_small_to_protect(size):
    message = refusal(Image.new("RGB", size))
    assert "too small to protect" in message and str(MIN_SIDE) in message
    assert load_image(Image.new("RGB", (MIN_SIDE, MIN_SIDE))).width == MIN_SIDE


@pytest.mark.parametrize("format", ["GIF", "WEBP", "PNG"])
def test_refuses_animations(format):
    data = animated(format, frames=3)
    assert refusal(data) == "animated image (3 frames): upload a single still image"
    assert refusal(Image.open(io.BytesIO(data))).startswith("animated image (3 frames)")
    assert load_image(animated(format, frames=1)).width == 16


def test_refuses_multi_page_tiff_and_float_images():
    pages = [Image.new("RGB", (16, 16)), Image.new("RGB", (16, 16))]
    assert refusal(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])).startswith("multi-page image (2 frames)")
    message = refusal(Image.fromarray(np.full((16, 16), 2.5, np.float32)))
    assert message.startswith("32-bit floating-point image with values from 2.5 to 2.5") and "0..1" in message
    assert "NaN" in refusal(Image.fromarray(np.full((16, 16), np.nan, np.float32)))


def test_save_refuses_a_different_size():
    original = load_image(Image.fromarray(random_rgb(16, 24)))
    for wrong in (original.pixels.transpose(2, 3), original.pixels[..., :-1]):
        with pytest.raises(ImageError) as caught:
            png_bytes(original, wrong)
        assert "must keep the input size" in str(caught.value) and "\n" not in str(caught.value)


# --- LoadedImage ---------------------------------------------------------------------------------


def test_loaded_image_validates_and_to_pil_carries_metadata():
    with pytest.raises(ValueError):
        LoadedImage(pixels=torch.zeros(3, 8, 8))
    with pytest.raises(ValueError):
        LoadedImage(pixels=torch.zeros(1, 3, 8, 8), alpha=Image.new("L", (4, 4)))
    original = LoadedImage(pixels=torch.zeros(1, 3, 8, 9), alpha=Image.new("L", (9, 8), 7), icc_profile=b"icc", exif=b"exif")
    assert "tensor" not in repr(original)  # repr stays short
    image = to_pil(original, torch.ones(1, 3, 8, 9))
    assert image.mode == "RGBA" and image.getpixel((0, 0)) == (255, 255, 255, 7)
    assert image.info == {"icc_profile": b"icc", "exif": b"exif"}


def test_unique_stem_numbers_names_that_clash_ignoring_case():
    from fastprotect.images import unique_stem

    used: set[str] = set()
    assert [unique_stem(s, used) for s in ("cat", "Cat", "dog", "CAT", "cat_2")] == ["cat", "Cat_2", "dog", "CAT_3", "cat_2_2"]
    used = set()
    decomposed = unicodedata.normalize("NFD", "Café")  # how macOS file systems spell it
    names = ("café", decomposed, "Straße", "STRASSE", "東京", "東京")
    assert [unique_stem(s, used) for s in names] == ["café", f"{decomposed}_2", "Straße", "STRASSE_2", "東京", "東京_2"]


# --- rights metadata: PNG text, XMP, IPTC; resolution and colour chunks -------------------------------


def test_png_text_chunks_are_kept(tmp_path):
    base = Image.fromarray(random_rgb(16, 16))
    data = png_with_chunks(
        base,
        text_chunk("Author", "Jane Doé"),
        ztxt("Copyright", "© 2024 Jane Doé, all rights reserved".encode("latin-1")),
        itxt("Description", "東京の夜 — a night in Tokyo", lang="ja", tkey="説明", compressed=True),
        itxt("Title", "Night"),
    )
    data = png_with_chunks(data, text_chunk("Software", "Krita"), after_idat=True)
    path = tmp_path / "art.png"
    path.write_bytes(data)
    image = load_image(path)
    assert image.notes == []
    expected = {
        "Author": "Jane Doé",
        "Copyright": "© 2024 Jane Doé, all rights reserved",
        "Description": "東京の夜 — a night in Tokyo",
        "Title": "Night",
        "Software": "Krita",  # a chunk after the pixel data too
    }
    assert image.text == expected
    saved = reload(png_bytes(image, 1 - image.pixels))
    assert dict(saved.text) == expected
    assert (saved.text["Description"].lang, saved.text["Description"].tkey) == ("ja", "説明")
    with Image.open(io.BytesIO(data)) as opened:  # a PIL image the caller opened keeps its text too
        assert load_image(opened).text == expected


def test_jpeg_xmp_and_iptc_are_kept():
    xmp, iptc = xmp_packet(), iptc_records(copyright="© 2024 Jane Doe")
    data = jpeg_with_iptc(Image.fromarray(random_rgb(16, 16)), iptc, xmp=xmp, comment=b"shot in Tokyo")
    image = load_image(data)
    assert image.xmp == xmp and image.iptc == iptc and image.text == {"Comment": "shot in Tokyo"} and image.notes == []
    saved = reload(png_bytes(image, image.pixels))
    assert saved.info["xmp"] == xmp  # byte for byte, in iTXt XML:com.adobe.xmp
    assert saved.text["XML:com.adobe.xmp"].encode("utf-8") == xmp
    assert saved.text["Comment"] == "shot in Tokyo"
    # IPTC: zTXt "Raw profile type iptc" = "\niptc\n<length>\n<hex>", a Photoshop block with resource 0x0404
    _, name, length, digits = saved.text["Raw profile type iptc"].split("\n", 3)
    block = bytes.fromhex("".join(digits.split()))
    assert name == "iptc" and int(length) == len(block)
    assert block[:6] == b"8BIM\x04\x04" and struct.unpack(">I", block[8:12])[0] == len(iptc) and block[12 : 12 + len(iptc)] == iptc
    assert "© 2024 Jane Doe".encode() in block
    again = load_image(png_bytes(image, image.pixels))  # and PNG -> PNG keeps it all again
    assert again.xmp == xmp and again.text["Raw profile type iptc"] == saved.text["Raw profile type iptc"]


def test_webp_and_tiff_xmp_is_kept():
    xmp = xmp_packet("CC BY-NC 4.0")
    webp = load_image(encode(Image.fromarray(random_rgb(16, 16)), "WEBP", lossless=True, xmp=xmp))
    assert webp.xmp == xmp and reload(png_bytes(webp, webp.pixels)).info["xmp"] == xmp
    iptc = iptc_records()
    tif = load_image(encode(Image.fromarray(random_rgb(16, 16)), "TIFF", tiffinfo={700: xmp, 33723: iptc}))
    assert tif.xmp == xmp and tif.iptc == iptc


def test_xmp_orientation_is_reset_when_the_pixels_are_turned():
    xmp = xmp_packet(orientation=6)
    exif = Image.Exif()
    exif[0x0112] = 6
    image = load_image(encode(Image.fromarray(random_rgb(16, 32)), "JPEG", exif=exif, xmp=xmp))
    assert (image.width, image.height) == (16, 32)
    assert image.xmp == xmp.replace(b'tiff:Orientation="6"', b'tiff:Orientation="1"')
    saved = reload(png_bytes(image, image.pixels))
    assert saved.size == (16, 32) and saved.getexif()[0x0112] == 1  # no viewer turns it again


def test_exif_copies_in_png_text_are_not_carried_over():
    raw = exif_with_thumbnail(1, b"UNPROTECTED-THUMBNAIL")[6:]
    profile = f"\nexif\n{len(raw):8d}\n{raw.hex()}\n"
    image = load_image(png_with_chunks(Image.fromarray(random_rgb(16, 16)), text_chunk("Raw profile type exif", profile)))
    assert image.exif is not None and "Raw profile type exif" not in image.text
    assert b"UNPROTECTED-THUMBNAIL".hex().encode() not in png_bytes(image, image.pixels)


def test_resolution_and_png_colour_chunks_are_kept():
    chrm = struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
    data = encode(Image.fromarray(random_rgb(16, 16)), "PNG", dpi=(300, 300))
    data = png_with_chunks(data, (b"gAMA", struct.pack(">I", 100000)), (b"cHRM", chrm), (b"cICP", bytes([9, 16, 0, 1])))
    assert "gamma" not in reload(encode(reload(data), "PNG")).info  # Pillow alone does not write gAMA back...
    image = load_image(data)
    assert image.png_colour == {"gAMA": struct.pack(">I", 100000), "cHRM": chrm, "cICP": bytes([9, 16, 0, 1])}
    written = png_bytes(image, image.pixels)
    saved = reload(written)  # ...we do: a linear-gamma PNG must not turn dark, nor an HDR one flat
    assert saved.info["gamma"] == 1.0 and saved.info["chromaticity"][0] == 0.3127 and saved.info["dpi"][0] == pytest.approx(300, rel=1e-4)
    assert b"cICP" + bytes([9, 16, 0, 1]) in written
    jpeg = load_image(encode(Image.fromarray(random_rgb(16, 16)), "JPEG", dpi=(300, 300)))
    assert jpeg.dpi == (300, 300) and reload(png_bytes(jpeg, jpeg.pixels)).info["dpi"] == pytest.approx((300, 300), rel=1e-4)


# --- large and damaged text chunks ----------------------------------------------------------------


@pytest.mark.parametrize("source", ["bytes", "path", "file"])
def test_text_chunk_past_pillows_limit_is_kept(source, tmp_path):
    big = "x" * (2 * 2**20)  # inflates past Pillow's 1 MB limit: Pillow alone refuses the file
    data = png_with_chunks(Image.fromarray(random_rgb(16, 16)), ztxt("Description", big.encode()), text_chunk("Author", "Jane"))
    with pytest.raises(ValueError, match="too large"):
        reload(data)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        image = load_image({"bytes": data, "path": path}.get(source, handle))
    assert image.notes == [] and image.text == {"Description": big, "Author": "Jane"}
    assert reload(png_bytes(image, image.pixels)).text["Description"] == big  # written so Pillow reads it back


def test_text_bomb_is_dropped_not_the_image():
    base = random_rgb(16, 16)
    bomb = ztxt("Comment", bytes(40 * 2**20))  # 40 KB in the file, 40 MB inflated
    data = png_with_chunks(Image.fromarray(base), text_chunk("Copyright", "(c) Jane"), bomb, after_idat=True)
    assert len(data) < 100_000
    tracemalloc.start()
    try:
        image = load_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MB"
    assert np.array_equal(pixels_to_uint8(image.pixels), base)
    assert image.text == {"Copyright": "(c) Jane"}
    assert image.notes == ["PNG text chunk 'Comment' dropped: over the 16 MB limit for text metadata"]
    assert "Comment" not in reload(png_bytes(image, image.pixels)).text


def test_damaged_text_chunk_is_dropped_with_a_note():
    data = bytearray(png_with_chunks(Image.fromarray(random_rgb(16, 16)), text_chunk("Author", "Jane"), text_chunk("Title", "x")))
    data[data.index(b"Jane")] ^= 1  # CRC no longer matches: Pillow alone refuses the file
    with pytest.raises(OSError):  # Pillow: "cannot identify image file"
        reload(bytes(data))
    image = load_image(bytes(data))
    assert image.text == {"Title": "x"} and image.notes == ["PNG text chunk 'Author' dropped: damaged (bad checksum)"]


# --- TIFF -----------------------------------------------------------------------------------------


def test_32_bit_integer_tiff_is_scaled_by_its_bit_depth():
    values = np.linspace(0, 2**32 - 1, 64, dtype=np.float64).astype(np.uint32).reshape(8, 8)
    image = load_image(tiff(values, 32))
    expected = np.round(values.astype(np.float64) / (2**32 - 1) * 255).astype(np.uint8)
    assert np.abs(pixels_to_uint8(image.pixels)[..., 0].astype(int) - expected).max() <= 1  # not clipped at 65535
    assert image.notes[0] == "32-bit integer image scaled to 8 bits per channel (0..4294967295 -> 0..255)"
    signed = load_image(tiff(np.array([[-5, 0, 2**31 - 1, 2**30] * 2] * 8), 32, sample_format=2))
    assert pixels_to_uint8(signed.pixels)[0, :4, 0].tolist() == [0, 0, 255, 128]
    assert "32-bit signed integer image scaled to 8 bits per channel (0..2147483647 -> 0..255)" in signed.notes
    assert "negative sample values shown as black" in signed.notes


def test_16_bit_tiff_and_int_images_without_a_stated_depth():
    image = load_image(tiff(SIXTEEN_BIT, 16))
    assert np.array_equal(pixels_to_uint8(image.pixels)[..., 0], ROUNDED)
    assert image.notes[0] == "16-bit image reduced to 8 bits per channel"
    big = load_image(Image.fromarray(np.full((8, 8), 2**30, np.int32)))  # "I" in memory, over 16 bits
    assert pixels_to_uint8(big.pixels).max() == 128 and "assumed from the values" in big.notes[0]


def test_float_images_in_0_1_are_converted_and_others_refused():
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    image = load_image(tiff(values, 32, sample_format=3))
    assert np.array_equal(pixels_to_uint8(image.pixels)[..., 0], np.round(values * 255).astype(np.uint8))
    assert image.notes[0] == "32-bit floating-point image (values 0..1) reduced to 8 bits per channel"
    assert "from -1 to 3" in refusal(tiff(np.linspace(-1, 3, 64).reshape(8, 8), 32, sample_format=3))


def test_tiff_keeps_descriptive_tags_only(tmp_path):
    values = np.zeros((8, 16, 3), np.uint8)
    values[:, :8] = 255
    extra = ((0x013B, 2, "Jane Doe"), (0x8298, 2, "(c) Jane Doe"), (0x010E, 2, "Night"), (0x0112, 3, [6]))
    path = tmp_path / "scan.tif"
    path.write_bytes(tiff(values, 8, extra_tags=extra))
    image = load_image(path)
    assert (image.width, image.height) == (8, 16)  # orientation 6 applied
    exif = reload(png_bytes(image, image.pixels)).getexif()
    assert dict(exif) == {0x013B: "Jane Doe", 0x8298: "(c) Jane Doe", 0x010E: "Night"}  # no StripOffsets, no orientation
    with_ifd = Image.Exif()
    with_ifd[0x8298] = "(c) Jane"
    with_ifd[0x8769] = {0x9003: "2024:01:02 03:04:05"}
    loaded = load_image(encode(Image.fromarray(values), "TIFF", exif=with_ifd.tobytes()))
    kept = Image.Exif()
    kept.load(loaded.exif)
    assert kept[0x8298] == "(c) Jane" and kept.get_ifd(0x8769)[0x9003] == "2024:01:02 03:04:05"
    assert not set(kept) & {256, 257, 258, 259, 273, 279}


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, stem", [
    ("café 東京 (1).JPG", "café 東京 (1)"),
    ("../../etc/my photo (1).JPG", "my photo (1)"),
    ("C:\\Users\\jane\\Desktop\\art.png", "art"),
    ("holiday.v2.jpg", "holiday.v2"),
    ("holiday.v2", "holiday.v2"),  # not an image extension: part of the name (so safe_stem(safe_stem(x)) is stable)
    ("a<b>c:d\"e|f?g*h.png", "a_b_c_d_e_f_g_h"),
    ("evil\u202egnp.exe.png", "evil_gnp.exe"),  # bidi override
    ("line\nbreak\x00nul.png", "line_break_nul"),
    ("  ..hidden.. .png", "hidden"),
    ("..", "image"),
    ("", "image"),
    (None, "image"),
    ("Cafe\u0301.png", "Café"),  # NFC
    ("👩\u200d💻 art.png", "👩\u200d💻 art"),  # zero-width joiner kept
])
def test_safe_stem(name, stem):
    assert images.safe_stem(name) == stem
    assert images.safe_stem(stem) == (stem if name else "image")


def test_safe_stem_length_limits():
    assert images.safe_stem("a" * 300 + ".png") == "a" * 120
    cjk = images.safe_stem("東" * 300)
    assert cjk == "東" * 66 and len(cjk.encode()) <= 200  # 3 bytes each: the byte limit binds first
    combining = images.safe_stem("e" * 119 + "e\u0301\u0302x")  # no NFC form for e + two accents
    assert combining == "e" * 119 and unicodedata.category(combining[-1]) != "Mn"
    flags = images.safe_stem("x" * 117 + "🇯🇵🇫🇷")
    assert flags == "x" * 117 + "🇯🇵"  # never half a flag
    assert images.safe_stem("...", default="upload") == "upload"


def test_load_image_names_keep_unicode(tmp_path):
    path = tmp_path / "café 東京 (1).JPG"
    Image.fromarray(random_rgb(16, 16)).save(path, format="JPEG")
    assert load_image(path).name == "café 東京 (1)"
    assert load_image(path.read_bytes(), name="../x/évasion\n.png").name == "évasion_"


# --- the PNG writer (issue 31: our filter and DEFLATE, Pillow's metadata chunks) ------------------------------------


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a PNG, checking each CRC."""
    out, position = [], 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        assert struct.unpack(">I", data[position + 8 + length : position + 12 + length])[0] == zlib.crc32(kind + body)
        out.append((kind, body))
        position += 12 + length
    return out


@pytest.mark.parametrize("backend", ["default", "zlib"])
@pytest.mark.parametrize("width, height, alpha", [(9, 8, False), (13, 11, True), (1700, 1300, False), (1301, 1700, True)])
def test_written_png_has_the_exact_pixels_and_pillows_own_metadata_chunks(width, height, alpha, backend, monkeypatch):
    """The pixels decode to exactly what was protected (alpha untouched), with either DEFLATE back-end and, from
    8 MB of rows, with the stream compressed in two halves; every chunk besides the image data is the one Pillow's
    own writer makes for the same image, in the same place."""
    if backend == "zlib":
        monkeypatch.setattr(images, "_deflate", zlib)
    rng = np.random.default_rng(width)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = rng.integers(0, 256, (height, width), dtype=np.uint8)
    source = Image.fromarray(np.dstack([rgb, mask]), "RGBA") if alpha else Image.fromarray(rgb)
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010E] = "a description"
    data = encode(source, "PNG", icc_profile=profile, exif=exif.tobytes(), dpi=(72, 72),
                  pnginfo=_pnginfo({"Author": "Jane", "Description": "x" * 3000}))
    original = load_image(data)
    protected = ((original.pixels * 255 + torch.randint(-8, 9, original.pixels.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 255)) / 255
    written = png_bytes(original, protected)
    saved = reload(written)
    assert saved.size == (width, height) and saved.mode == ("RGBA" if alpha else "RGB")
    assert np.array_equal(np.asarray(saved)[..., :3], pixels_to_uint8(protected))
    if alpha:
        assert np.array_equal(np.asarray(saved)[..., 3], mask)
    pillow = io.BytesIO()
    reference = images.to_pil(original, protected)
    reference.save(pillow, format="PNG", pnginfo=images.png_info(original), **reference.info)
    ours, theirs = _chunks(written), _chunks(pillow.getvalue())
    assert [c for c in ours if c[0] != b"IDAT"] == [c for c in theirs if c[0] != b"IDAT"]
    assert ours.index(next(c for c in ours if c[0] == b"IDAT")) == theirs.index(next(c for c in theirs if c[0] == b"IDAT"))
    assert len(written) < 1.05 * len(pillow.getvalue())  # no larger than Pillow's level-1 file, give or take


def _pnginfo(text: dict[str, str]):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    return info


def test_decoding_gives_exact_levels_from_read_only_and_strided_arrays():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (300, 7, 3), dtype=np.uint8)
    expected = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255
    read_only = array.copy()
    read_only.flags.writeable = False
    strided = np.ascontiguousarray(np.repeat(array, 2, axis=1))[:, ::2]
    for variant in (array, read_only, strided):
        assert torch.equal(uint8_to_pixels(variant), expected)


# ---------------------------------------------------------------------------------------------
# 8-bit levels (load_image(levels=True)) and the row-block PNG writer (issue 31: peak memory)


@pytest.mark.parametrize("height, width, to_height, to_width", [
    (777, 1001, 97, 125),  # shrinking both ways, several bands
    (600, 517, 600, 200),  # the width only
    (530, 300, 100, 300),  # the height only
    (300, 90, 150, 200),  # shrinking one way, enlarging the other (antialias on for both passes)
    (40, 50, 80, 100),  # enlarging: no antialias
])
def test_resize_image_of_levels_is_resize_tensor_of_the_floats_bit_for_bit(height, width, to_height, to_width):
    """The banded two-pass resize of 8-bit levels gives exactly resize_tensor's numbers on the float pixels: the
    generator's network copy (and so its δ) must not change when the CLI keeps the image as levels."""
    from fastprotect.images import resize_image, resize_tensor

    levels = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(height))
    expected = resize_tensor(levels.float() / 255, to_height, to_width)
    assert torch.equal(resize_image(levels, to_height, to_width), expected)
    channels_last = levels.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # load_image's view of the decoded array
    assert torch.equal(resize_image(channels_last, to_height, to_width), expected)


def test_levels_load_the_same_pixels_as_floats_without_a_float_copy(tmp_path):
    from fastprotect.images import levels_to_pixels, pixel_rows, pixels_to_levels

    rgb = random_rgb(300, 517)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    floats, levels = load_image(path), load_image(path, levels=True)
    assert levels.pixels.dtype == torch.uint8 and levels.pixels.shape == floats.pixels.shape == (1, 3, 300, 517)
    assert levels.pixels.untyped_storage().nbytes() == rgb.nbytes  # a view of the decoded array, no float copy
    assert torch.equal(levels_to_pixels(levels.pixels), floats.pixels)
    assert torch.equal(pixel_rows(levels.pixels, 256, 300), floats.pixels[..., 256:300, :])
    assert torch.equal(pixels_to_levels(floats.pixels), levels.pixels)
    assert np.array_equal(pixels_to_uint8(levels.pixels), rgb) and np.array_equal(pixels_to_uint8(floats.pixels), rgb)


@pytest.mark.parametrize("height, width, alpha", [(1, 9, False), (8, 8, True), (777, 1001, True), (1400, 2100, False)])
def test_the_row_block_png_writer_round_trips_floats_and_levels(height, width, alpha, tmp_path):
    """Blocks of rows, two halves on two threads for large images (1400×2100 is over the threshold): the PNG decodes
    to exactly the pixels and alpha given, as floats or as levels, to a path and into memory."""
    rng = np.random.default_rng(height)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L") if alpha else None
    levels = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
    original = LoadedImage(pixels=levels.float() / 255, alpha=mask)
    for pixels in (original.pixels, levels):
        path = tmp_path / "out.png"
        save_png(original, pixels, path)
        for data in (path.read_bytes(), png_bytes(original, pixels)):
            decoded = np.asarray(reload(data))
            assert np.array_equal(decoded[..., :3], rgb)
            if alpha:
                assert np.array_equal(decoded[..., 3], np.asarray(mask))
            assert zlib.decompress(b"".join(_idat_payloads(data)))  # one valid zlib stream (checksum included)


def _idat_payloads(data: bytes) -> list[bytes]:
    payloads, position = [], 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            payloads.append(data[position + 8 : position + 8 + length])
        position += 12 + length
    return payloads


def test_adler32_of_two_parts_combines_as_zlib_does():
    import random

    draw = random.Random(7)
    for _ in range(50):
        first = bytes(draw.getrandbits(8) for _ in range(draw.randint(0, 5000)))
        second = bytes(draw.getrandbits(8) for _ in range(draw.randint(0, 90000)))
        assert images._adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second)) == zlib.adler32(first + second)


def test_a_png_that_cannot_be_encoded_leaves_no_file(tmp_path):
    original = LoadedImage(pixels=torch.zeros(1, 3, 8, 8))
    bad = torch.full((1, 3, 8, 8), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        save_png(original, bad, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()
