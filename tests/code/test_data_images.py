"""Image normalisation: every odd or broken input is built here, on the fly."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from clearmark.data.images import ImageInfo, ImageRejected, load_normalized
from clearmark.data.masks import coverage, mask_from_boxes, mask_from_difference

LIMIT = 10_000_000


def _noise(width: int = 64, height: int = 48) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_header(path: Path, width: int, height: int) -> Path:
    """A few hundred bytes whose IHDR claims ``width`` x ``height`` (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))
    return path


def _rejected(path: Path, max_pixels: int = LIMIT) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        load_normalized(path, max_pixels=max_pixels)
    assert path.name in caught.value.detail
    return caught.value


def test_plain_rgb_png_is_returned_unchanged(tmp_path: Path) -> None:
    original = _noise()
    original.save(tmp_path / "plain.png")
    image, info = load_normalized(tmp_path / "plain.png", max_pixels=LIMIT)
    assert info == ImageInfo(width=64, height=48, mode="RGB", format="PNG", bytes=(tmp_path / "plain.png").stat().st_size)
    assert np.array_equal(np.asarray(image), np.asarray(original))


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    error = _rejected(tmp_path / "empty.jpg")
    assert error.reason == "zero_bytes" and "copy the file again" in error.detail


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("these are my holiday notes, not a picture\n")
    error = _rejected(tmp_path / "notes.jpg")
    assert error.reason == "not_image" and "remove it" in error.detail


def test_image_signature_followed_by_garbage_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert _rejected(tmp_path / "garbage.png").reason == "corrupt"


def test_damaged_pixel_data_is_corrupt(tmp_path: Path) -> None:
    _noise().save(tmp_path / "good.png")
    data = bytearray((tmp_path / "good.png").read_bytes())
    for offset in range(200, 260):  # inside the compressed IDAT stream
        data[offset] ^= 0x55
    (tmp_path / "damaged.png").write_bytes(bytes(data))
    assert _rejected(tmp_path / "damaged.png").reason == "corrupt"


@pytest.mark.parametrize("suffix", ["jpg", "png"])
@pytest.mark.parametrize("lenient_pillow", [False, True])
def test_truncated_files_are_refused_even_if_pillow_was_made_lenient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, lenient_pillow: bool
) -> None:
    _noise().save(tmp_path / f"whole.{suffix}")
    data = (tmp_path / f"whole.{suffix}").read_bytes()
    (tmp_path / f"cut.{suffix}").write_bytes(data[: len(data) * 6 // 10])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient_pillow)
    error = _rejected(tmp_path / f"cut.{suffix}")
    assert error.reason == "truncated" and "complete file" in error.detail
    assert ImageFile.LOAD_TRUNCATED_IMAGES is lenient_pillow  # the caller's setting is restored


def test_bomb_header_far_above_pillows_own_limit(tmp_path: Path) -> None:
    path = _png_with_header(tmp_path / "bomb.png", 100_000, 100_000)
    assert path.stat().st_size < 1000
    assert _rejected(path).reason == "too_large"


def test_header_above_our_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    # The pixel data is far too short: decoding would report "truncated", so "too_large"
    # proves that the header check ran first.
    path = _png_with_header(tmp_path / "wide.png", 3000, 3000)
    error = _rejected(path, max_pixels=1_000_000)
    assert error.reason == "too_large" and "3000x3000" in error.detail and "CLEARMARK_MAX_IMAGE_PIXELS" in error.detail


def test_unsupported_format(tmp_path: Path) -> None:
    _noise(32, 32).save(tmp_path / "icon.ico")
    error = _rejected(tmp_path / "icon.ico")
    assert error.reason == "unsupported" and "ICO" in error.detail


def test_floating_point_tiff_is_unsupported(tmp_path: Path) -> None:
    Image.fromarray(np.ones((8, 8), np.float32)).save(tmp_path / "float.tif")
    assert _rejected(tmp_path / "float.tif").reason == "unsupported"


def test_cmyk_jpeg_becomes_rgb_with_similar_colours(tmp_path: Path) -> None:
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # pure red ink
    image, info = load_normalized(tmp_path / "cmyk.jpg", max_pixels=LIMIT)
    assert (image.mode, info.mode, info.format) == ("RGB", "CMYK", "JPEG")
    red, green, blue = np.asarray(image).reshape(-1, 3).mean(axis=0)
    assert red > 230 and green < 30 and blue < 30


def test_16_bit_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    samples = np.array([[0, 257 * 128, 65535, 257 * 10]], np.uint16).repeat(4, axis=0)
    Image.fromarray(samples).save(tmp_path / "deep.png")
    image, info = load_normalized(tmp_path / "deep.png", max_pixels=LIMIT)
    assert info.mode.startswith("I") and image.mode == "RGB"
    assert np.asarray(image)[0, :, 0].tolist() == [0, 128, 255, 10]


def test_palette_transparency_is_flattened_on_white(tmp_path: Path) -> None:
    palette_image = Image.new("P", (10, 10), 0)
    palette_image.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    palette_image.paste(1, (0, 0, 5, 10))  # left half blue, right half red
    palette_image.save(tmp_path / "palette.png", transparency=1)  # ... and blue is transparent
    image, info = load_normalized(tmp_path / "palette.png", max_pixels=LIMIT)
    pixels = np.asarray(image)
    assert info.mode == "P"
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[0, 9].tolist() == [200, 0, 0]


@pytest.mark.parametrize(("mode", "colour", "expected"), [("RGBA", (0, 0, 255, 128), [127, 127, 255]), ("LA", (0, 128), [127, 127, 127])])
def test_alpha_is_flattened_on_white(tmp_path: Path, mode: str, colour: tuple[int, ...], expected: list[int]) -> None:
    Image.new(mode, (6, 6), colour).save(tmp_path / "alpha.png")
    image, info = load_normalized(tmp_path / "alpha.png", max_pixels=LIMIT)
    assert info.mode == mode and image.mode == "RGB"
    assert np.abs(np.asarray(image)[0, 0].astype(int) - expected).max() <= 1


def test_grey_image_becomes_rgb(tmp_path: Path) -> None:
    Image.new("L", (5, 5), 77).save(tmp_path / "grey.png")
    image, info = load_normalized(tmp_path / "grey.png", max_pixels=LIMIT)
    assert info.mode == "L" and np.asarray(image)[2, 2].tolist() == [77, 77, 77]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste((0, 0, 0), (0, 0, 10, 20))  # black band on the stored image's left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image, info = load_normalized(tmp_path / "phone.jpg", max_pixels=LIMIT)
    assert (info.width, info.height) == (20, 40) == image.size
    pixels = np.asarray(image).astype(int)
    assert pixels[2, 10].max() < 40 and pixels[-3, 10].min() > 215  # the band is now at the top


# --- masks (clearmark.data.masks) ------------------------------------------------------------


def test_mask_from_difference_marks_changed_pixels_and_drops_specks() -> None:
    clean = np.full((20, 30, 3), 100, np.uint8)
    watermarked = clean.copy()
    watermarked[5:10, 5:15] = (100, 100, 160)  # a 5x10 watermark in one channel
    watermarked[15, 25] = 255  # one noisy pixel
    watermarked[0, 0] = 105  # below the threshold
    mask = mask_from_difference(Image.fromarray(watermarked), Image.fromarray(clean), threshold=10)
    pixels = np.asarray(mask)
    assert mask.mode == "L" and mask.size == (30, 20)
    expected = np.zeros((20, 30), np.uint8)
    expected[5:10, 5:15] = 255
    assert np.array_equal(pixels, expected)
    kept = np.asarray(mask_from_difference(Image.fromarray(watermarked), Image.fromarray(clean), threshold=10, min_area=0))
    assert kept[15, 25] == 255 and kept[0, 0] == 0


def test_mask_from_difference_refuses_pairs_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="same size"):
        mask_from_difference(Image.new("RGB", (10, 10)), Image.new("RGB", (10, 11)), threshold=10)


def test_mask_from_boxes_and_coverage() -> None:
    mask = mask_from_boxes((100, 50), [(0, 0.5, 0.5, 0.2, 0.4), (0, 0.95, 0.1, 0.2, 0.2)])
    pixels = np.asarray(mask)
    assert pixels[15:35, 40:60].min() == 255  # 20 x 20 centred box
    assert pixels[0:10, 85:100].min() == 255  # clipped at the right edge
    assert coverage(mask) == pytest.approx((20 * 20 + 10 * 15) / (100 * 50))
    assert coverage(mask_from_boxes((10, 10), [])) == 0.0
    with pytest.raises(ValueError, match="normalised"):
        mask_from_boxes((10, 10), [(0, 5.0, 5.0, 2.0, 2.0)])


def test_rejection_survives_pickling_with_both_fields(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "empty.png").write_bytes(b"")
    copy = pickle.loads(pickle.dumps(_rejected(tmp_path / "empty.png")))
    assert isinstance(copy, ImageRejected) and copy.reason == "zero_bytes" and "empty.png" in copy.detail


def test_riff_audio_named_webp_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "sound.webp").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32))
    assert _rejected(tmp_path / "sound.webp").reason == "not_image"
