"""Format preservation: format, mode, ICC, EXIF orientation, alpha, 16-bit depth, JPEG quality."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps
from PIL.PngImagePlugin import PngInfo

from clearmark.data.images import IMAGE_SUFFIXES
from clearmark.removal.imageio import (
    DecodedImage,
    ImageDecodeError,
    decode_image,
    encode_image,
    from_upright,
    is_image_name,
    merge_cleaned,
    to_upright,
)
from tests.support.hostile_archives import clean_rgb

MAX_PIXELS = 50_000_000
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _round_trip(data: bytes) -> tuple[DecodedImage, Image.Image]:
    decoded = decode_image(data, max_pixels=MAX_PIXELS)
    out = encode_image(decoded, decoded.pixels)
    return decoded, Image.open(io.BytesIO(out))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.PSNR(np.ascontiguousarray(a), np.ascontiguousarray(b)))


@pytest.mark.parametrize(
    ("fmt", "params", "lossless"),
    [
        ("JPEG", {"quality": 90}, False),
        ("PNG", {}, True),
        ("WEBP", {"lossless": True}, True),
        ("WEBP", {"quality": 80}, False),
        ("TIFF", {"compression": "tiff_lzw"}, True),
        ("BMP", {}, True),
    ],
)
def test_each_format_round_trips_in_its_own_format(fmt, params, lossless):
    rgb = clean_rgb(48, 80)
    original = _save(Image.fromarray(rgb), fmt, **params)
    decoded, reopened = _round_trip(original)
    assert reopened.format == fmt and reopened.mode == "RGB" and reopened.size == (80, 48)
    if lossless:
        assert np.array_equal(np.asarray(reopened), rgb)
    else:
        assert _psnr(np.asarray(reopened), np.asarray(Image.open(io.BytesIO(original)).convert("RGB"))) > 30


def test_lossless_webp_stays_lossless_and_lossy_stays_lossy():
    rgb = clean_rgb(32, 32)
    assert decode_image(_save(Image.fromarray(rgb), "WEBP", lossless=True), max_pixels=MAX_PIXELS).info["lossless"]
    assert not decode_image(_save(Image.fromarray(rgb), "WEBP", quality=70), max_pixels=MAX_PIXELS).info["lossless"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_icc_profile_is_kept(fmt):
    original = _save(Image.fromarray(clean_rgb()), fmt, icc_profile=SRGB_ICC)
    _, reopened = _round_trip(original)
    assert reopened.info.get("icc_profile") == SRGB_ICC


def test_jpeg_keeps_quantisation_tables_subsampling_and_exif():
    exif = Image.Exif()
    exif[0x010F] = "ClearmarkCam"  # Make
    original = _save(Image.fromarray(clean_rgb(64, 64)), "JPEG", quality=63, subsampling=1, exif=exif)
    decoded, reopened = _round_trip(original)
    source = Image.open(io.BytesIO(original))
    assert reopened.quantization == source.quantization
    assert decoded.jpeg_quality == pytest.approx(63, abs=1)
    from PIL import JpegImagePlugin

    assert JpegImagePlugin.get_sampling(reopened) == JpegImagePlugin.get_sampling(source) == 1
    assert reopened.getexif()[0x010F] == "ClearmarkCam"


def test_png_text_and_resolution_chunks_are_kept():
    info = PngInfo()
    info.add_text("Author", "Ada")
    original = _save(Image.fromarray(clean_rgb()), "PNG", pnginfo=info, dpi=(300, 300))
    _, reopened = _round_trip(original)
    assert reopened.info["Author"] == "Ada"
    assert tuple(round(v) for v in reopened.info["dpi"]) == (300, 300)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_helpers_match_pil_and_invert(orientation):
    stored = clean_rgb(20, 30)
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright_by_pil = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(_save(Image.fromarray(stored), "PNG", exif=exif)))))
    assert np.array_equal(to_upright(stored, orientation), upright_by_pil)
    assert np.array_equal(from_upright(upright_by_pil, orientation), stored)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_is_kept_and_pixels_stay_in_stored_orientation(fmt):
    stored = clean_rgb(40, 60)
    if fmt == "TIFF":
        original = _save(Image.fromarray(stored), fmt, tiffinfo={274: 6})
    else:
        exif = Image.Exif()
        exif[0x0112] = 6
        original = _save(Image.fromarray(stored), fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
    decoded = decode_image(original, max_pixels=MAX_PIXELS)
    assert decoded.orientation == 6
    assert decoded.upright_rgb8().shape == (60, 40, 3)  # the detector sees the image upright
    again = decode_image(encode_image(decoded, decoded.pixels), max_pixels=MAX_PIXELS)
    assert again.orientation == 6  # the tag is unchanged, so viewers show it as before ...
    assert again.pixels.shape == stored.shape  # ... and the pixels are in the stored orientation
    if fmt != "JPEG":
        assert np.array_equal(again.pixels, stored)


def test_alpha_channel_is_untouched_and_only_rgb_inside_the_mask_changes():
    rgba = np.dstack([clean_rgb(32, 32), np.linspace(0, 255, 32 * 32).reshape(32, 32).astype(np.uint8)])
    decoded = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"), max_pixels=MAX_PIXELS)
    assert decoded.has_alpha
    mask = np.zeros((32, 32), np.uint8)
    mask[4:10, 4:20] = 255
    painted = np.full((32, 32, 3), 7, np.uint8)
    reopened = np.asarray(Image.open(io.BytesIO(encode_image(decoded, merge_cleaned(decoded, painted, mask)))))
    assert reopened.shape == (32, 32, 4)
    assert np.array_equal(reopened[:, :, 3], rgba[:, :, 3])
    assert (reopened[4:10, 4:20, :3] == 7).all()
    outside = mask == 0
    assert np.array_equal(reopened[outside], rgba[outside])


@pytest.mark.parametrize(("suffix", "channels"), [(".png", 3), (".png", 4), (".png", 1), (".tif", 3)])
def test_16_bit_images_stay_16_bit_and_keep_exact_values_outside_the_mask(suffix, channels):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 65535, (24, 40, channels) if channels > 1 else (24, 40), dtype=np.uint16)
    data = cv2.imencode(suffix, array)[1].tobytes()
    decoded = decode_image(data, max_pixels=MAX_PIXELS)
    assert decoded.high_bit_depth and decoded.rgb8().dtype == np.uint8
    mask = np.zeros((24, 40), np.uint8)
    mask[5:10, 5:15] = 255
    out = encode_image(decoded, merge_cleaned(decoded, np.full((24, 40, 3), 255, np.uint8), mask))
    reopened = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED)
    assert reopened.dtype == np.uint16 and reopened.shape == array.shape
    outside = mask == 0
    assert np.array_equal(reopened[outside], array[outside])
    inside = reopened[mask > 0]
    assert (inside[..., :3] == 65535).all() if channels > 1 else (inside == 65535).all()
    if channels == 4:
        assert np.array_equal(reopened[..., 3], array[..., 3])  # alpha untouched


@pytest.mark.parametrize(("mode", "fmt"), [("L", "JPEG"), ("L", "PNG"), ("CMYK", "JPEG"), ("1", "PNG"), ("LA", "PNG")])
def test_grey_bilevel_and_cmyk_images_keep_their_mode(mode, fmt):
    original = _save(Image.fromarray(clean_rgb()).convert(mode), fmt)
    _, reopened = _round_trip(original)
    assert reopened.mode == mode and reopened.format == fmt
    if fmt == "PNG":
        assert np.array_equal(np.asarray(reopened), np.asarray(Image.open(io.BytesIO(original))))


def test_palette_png_comes_back_as_rgb_with_the_same_colours():
    paletted = Image.fromarray(clean_rgb()).quantize(16)
    _, reopened = _round_trip(_save(paletted, "PNG"))
    assert reopened.mode == "RGB"
    assert np.array_equal(np.asarray(reopened), np.asarray(paletted.convert("RGB")))


def test_unsupported_or_broken_inputs_raise_clear_errors():
    with pytest.raises(ImageDecodeError, match="GIF images are not cleaned"):
        decode_image(_save(Image.fromarray(clean_rgb()), "GIF"), max_pixels=MAX_PIXELS)
    with pytest.raises(ImageDecodeError, match="MP limit"):
        decode_image(_save(Image.fromarray(clean_rgb(100, 100)), "PNG"), max_pixels=5_000)
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(b"hello", max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("suffix", sorted(IMAGE_SUFFIXES))
def test_every_image_suffix_round_trips_through_removal_in_its_own_format(suffix: str) -> None:
    """The one suffix set (sources, training and removal) holds only formats removal writes back."""
    Image.init()
    fmt = Image.EXTENSION[suffix]
    decoded, out = _round_trip(_save(Image.fromarray(clean_rgb()), fmt))
    assert out.format == decoded.format == fmt
    assert is_image_name(f"photos/a{suffix.upper()}")
