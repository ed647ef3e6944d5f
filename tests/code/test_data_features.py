"""Unit tests of the per-image drift features (clearmark.data.features)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from clearmark.data.features import FEATURE_COLUMNS, estimate_jpeg_quality, image_features


def _photo_like(seed: int = 0, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    """A smooth colour gradient with some texture, closer to a photo than pure noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width * 200, yy / height * 200, (xx + yy) / (width + height) * 255], axis=2)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _reopen(rgb: np.ndarray, fmt: str, **save: object) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **save)
    buffer.seek(0)
    return Image.open(buffer)


def _features(rgb: np.ndarray) -> dict[str, float]:
    return image_features(rgb, jpeg_quality=None, mask_coverage=0.0, confidence=0.0)


def test_features_have_the_contract_columns_and_geometry() -> None:
    feats = image_features(_photo_like(size=(100, 250)), jpeg_quality=80, mask_coverage=0.25, confidence=0.75)
    assert list(feats) == FEATURE_COLUMNS
    assert (feats["width"], feats["height"], feats["aspect"]) == (250.0, 100.0, 2.5)
    assert (feats["jpeg_quality"], feats["mask_coverage"], feats["confidence"]) == (80.0, 0.25, 0.75)
    assert all(isinstance(v, float) for v in feats.values())


def test_missing_jpeg_quality_is_nan() -> None:
    assert math.isnan(_features(_photo_like())["jpeg_quality"])


def test_brightness_increases_with_a_brighter_image() -> None:
    image = _photo_like().astype(np.int16)
    values = [_features(np.clip(image + offset, 0, 255).astype(np.uint8))["brightness"] for offset in (-60, 0, 60)]
    assert values[0] < values[1] < values[2]


def test_contrast_increases_when_pixels_spread_around_the_mean() -> None:
    image = _photo_like().astype(np.float32)
    mean = image.mean()
    values = [_features(np.clip(mean + (image - mean) * gain, 0, 255).astype(np.uint8))["contrast"] for gain in (0.3, 1.0, 1.5)]
    assert values[0] < values[1] < values[2]


def test_grey_image_has_no_colourfulness_and_blur_lowers_sharpness() -> None:
    import cv2

    image = _photo_like()
    grey = np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    assert _features(grey)["colourfulness"] == pytest.approx(0.0, abs=1e-6)
    assert _features(image)["colourfulness"] > 10
    assert _features(cv2.GaussianBlur(image, (9, 9), 3))["sharpness"] < _features(image)["sharpness"] / 4


def test_large_images_keep_their_size_but_are_measured_downscaled() -> None:
    small = _photo_like(size=(300, 400))
    large = np.kron(small, np.ones((10, 10, 1), dtype=np.uint8))  # same picture, 10x the side
    feats = _features(large)
    assert (feats["width"], feats["height"]) == (4000.0, 3000.0)
    assert feats["brightness"] == pytest.approx(_features(small)["brightness"], abs=2)


def test_rgba_and_16_bit_inputs_are_accepted() -> None:
    image = _photo_like()
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert _features(rgba)["brightness"] == pytest.approx(_features(image)["brightness"])
    assert _features(image.astype(np.uint16) * 257)["brightness"] == pytest.approx(_features(image)["brightness"])


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4, 3), np.float32)])
def test_bad_arrays_get_a_clear_error(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="image_features expects"):
        _features(bad)


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_jpeg_quality_estimate_matches_the_saved_quality(quality: int) -> None:
    estimate = estimate_jpeg_quality(_reopen(_photo_like(), "JPEG", quality=quality))
    assert estimate is not None and abs(estimate - quality) <= 5


def test_jpeg_quality_estimate_for_a_greyscale_jpeg() -> None:
    estimate = estimate_jpeg_quality(_reopen(_photo_like()[:, :, 0], "JPEG", quality=30))
    assert estimate is not None and abs(estimate - 30) <= 5


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_jpeg_quality_is_none_for_other_formats(fmt: str) -> None:
    assert estimate_jpeg_quality(_reopen(_photo_like(), fmt)) is None

