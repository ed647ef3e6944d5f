"""Inpainters: registry, OpenCV quality, the untouched-outside-the-mask contract, and the
diffusers path on a tiny randomly initialised pipeline loaded from a local folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from clearmark.removal import inpaint
from clearmark.removal.inpaint import (
    DiffusersModelNotFoundError,
    Inpainter,
    UnknownInpainterError,
    available_inpainters,
    get_inpainter,
    inpaint_images,
    register_inpainter,
)
from clearmark.settings import Settings
from tests.support.tiny_diffusers import UNET_SAMPLE_SIZE, VAE_SCALE_FACTOR, save_tiny_inpaint_pipeline

TINY_RESOLUTION = UNET_SAMPLE_SIZE * VAE_SCALE_FACTOR
# Per-inpainter options that keep the tests fast; every registered inpainter is tested.
FAST_OPTIONS: dict[str, dict[str, object]] = {"diffusers": {"num_inference_steps": 2}}


def smooth_photo(height: int, width: int) -> np.ndarray:
    """A clean, smooth RGB image (gradients and low-frequency waves) that inpainting can recover."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 90 + 80 * x / width
    green = 120 + 50 * np.sin(y / 23.0)
    blue = 150 + 40 * np.cos((x + y) / 31.0)
    return np.clip(np.dstack([red, green, blue]), 0, 255).astype(np.uint8)


def add_text_watermark(clean: np.ndarray, text: str = "SAMPLE") -> tuple[np.ndarray, np.ndarray]:
    """Blend semi-transparent white text over ``clean``; return (watermarked, 0/255 mask)."""
    height, width = clean.shape[:2]
    strokes = np.zeros((height, width), np.uint8)
    cv2.putText(strokes, text, (width // 8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, width / 220, 255, 2, cv2.LINE_AA)
    alpha = 0.6 * strokes[..., None].astype(np.float32) / 255
    watermarked = np.rint(clean * (1 - alpha) + 255 * alpha).astype(np.uint8)
    mask = cv2.dilate((strokes > 0).astype(np.uint8) * 255, np.ones((3, 3), np.uint8))
    return watermarked, mask


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import torch

    # One thread: on a shared 2-core machine, OpenMP threads waiting on each other make
    # the tiny model's many small ops tens of times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield save_tiny_inpaint_pipeline(tmp_path_factory.mktemp("tiny-sd-inpaint"))
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    return Settings(home=tmp_path, diffusers_model_dir=tiny_model_dir)


# --- registry ------------------------------------------------------------------------


def test_builtin_inpainters_are_registered() -> None:
    assert {"telea", "ns", "diffusers", "restore"} <= set(available_inpainters())
    assert available_inpainters() == sorted(available_inpainters())
    assert Settings.model_fields["inpainter"].default in available_inpainters()


def test_unknown_inpainter_error_lists_available_names(tmp_path: Path) -> None:
    with pytest.raises(UnknownInpainterError) as excinfo:
        get_inpainter("lama-xl", Settings(home=tmp_path))
    message = str(excinfo.value)
    assert "lama-xl" in message
    for name in available_inpainters():
        assert name in message


def test_registered_inpainter_is_built_with_settings_and_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inpaint, "_REGISTRY", dict(inpaint._REGISTRY))

    class Flat:
        thread_safe = True

        def __init__(self, value: int) -> None:
            self.name = "flat"
            self.value = value

        def inpaint(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return np.where(inpaint.masked_pixels(rgb, mask)[..., None], np.uint8(self.value), rgb)

    seen: list[Settings] = []

    @register_inpainter("flat")
    def build_flat(settings: Settings, value: int = 0) -> Inpainter:
        seen.append(settings)
        return Flat(value)

    settings = Settings(home=tmp_path)
    flat = get_inpainter("flat", settings, value=7)
    assert "flat" in available_inpainters()
    assert seen == [settings] and isinstance(flat, Inpainter)
    rgb = np.full((4, 5, 3), 200, np.uint8)
    mask = np.zeros((4, 5), np.uint8)
    mask[1, 2] = 255
    result = inpaint_images(flat, [rgb], [mask])[0]
    assert result[1, 2].tolist() == [7, 7, 7] and result[0, 0].tolist() == [200, 200, 200]
    with pytest.raises(ValueError, match="already registered"):
        register_inpainter("flat")(build_flat)
    with pytest.raises(ValueError, match="one mask per image"):
        inpaint_images(flat, [rgb, rgb], [mask])


# --- OpenCV quality and input checks ---------------------------------------------------


@pytest.mark.parametrize("name", ["telea", "ns"])
def test_opencv_inpainters_remove_a_synthetic_watermark(name: str, tmp_path: Path) -> None:
    clean = smooth_photo(160, 240)
    watermarked, mask = add_text_watermark(clean)
    inside = mask > 0
    assert 0.01 < inside.mean() < 0.2  # a realistic text watermark, not a blank or a flood

    cleaned = get_inpainter(name, Settings(home=tmp_path)).inpaint(watermarked, mask)

    error_before = np.abs(watermarked.astype(int) - clean)[inside].mean()
    error_after = np.abs(cleaned.astype(int) - clean)[inside].mean()
    assert error_before > 40
    assert error_after < 0.15 * error_before, (error_before, error_after)


@pytest.mark.parametrize(("name", "flag"), [("telea", cv2.INPAINT_TELEA), ("ns", cv2.INPAINT_NS)])
@pytest.mark.parametrize("radius", [1, 3, 7.5])
def test_opencv_inpainters_match_opencv_on_the_whole_image(name: str, flag: int, radius: float, tmp_path: Path) -> None:
    # They only inpaint the mask's box plus a margin (for speed): the pixels must not change.
    rng = np.random.default_rng(int(radius * 10))
    photo = (smooth_photo(300, 420).astype(int) + rng.integers(-25, 25, (300, 420, 3))).clip(0, 255).astype(np.uint8)
    corner, corner_mask = add_text_watermark(photo[200:, 280:], "ab")
    watermarked, mask = photo.copy(), np.zeros((300, 420), np.uint8)
    watermarked[200:, 280:], mask[200:, 280:] = corner, corner_mask

    cleaned = get_inpainter(name, Settings(home=tmp_path), radius=radius, scale=1.0).inpaint(watermarked, mask)

    np.testing.assert_array_equal(cleaned, cv2.inpaint(watermarked, mask, radius, flag))


def test_telea_radius_and_scale_are_configurable_and_validated(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert get_inpainter("telea", settings, radius=7).radius == 7
    assert get_inpainter("telea", settings).scale == 0.5  # half resolution unless asked otherwise
    with pytest.raises(ValueError, match="radius must be positive"):
        get_inpainter("telea", settings, radius=0)
    for scale in (0, 1.5):
        with pytest.raises(ValueError, match="scale must be in"):
            get_inpainter("telea", settings, scale=scale)


@pytest.mark.parametrize("name", ["telea", "ns"])
@pytest.mark.parametrize("scale", [0.5, 0.7, 0.25])
def test_a_downscaled_fill_takes_no_watermark_colour_and_misses_no_pixel(name: str, scale: float, tmp_path: Path) -> None:
    """A small pixel is a hole if any pixel under it is: thin strokes are neither lost nor averaged in."""
    grey = np.full((90, 130, 3), 120, np.uint8)
    watermarked, mask = grey.copy(), np.zeros((90, 130), np.uint8)
    rows = np.arange(10, 80)
    mask[rows, rows + 20] = 255  # a one-pixel diagonal stroke
    mask[40:43, 90:120] = 255  # and a three-pixel bar
    watermarked[mask > 0] = 255

    cleaned = get_inpainter(name, Settings(home=tmp_path), scale=scale).inpaint(watermarked, mask)

    assert np.abs(cleaned.astype(int) - 120).max() <= 2  # every white pixel filled with the surroundings


@pytest.mark.parametrize(
    ("rgb", "mask", "complaint"),
    [
        (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), "uint8 RGB"),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "uint8 RGB"),
        (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.uint8), "uint8 RGB"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9), np.uint8), "image's size 8 x 8"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), bool), "uint8"),
    ],
)
def test_bad_inputs_get_a_clear_error(rgb: np.ndarray, mask: np.ndarray, complaint: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=complaint):
        get_inpainter("telea", Settings(home=tmp_path)).inpaint(rgb, mask)


# --- the contract every inpainter keeps ---------------------------------------------------


@pytest.mark.parametrize("name", available_inpainters())
def test_pixels_outside_the_mask_are_unchanged(name: str, tiny_settings: Settings) -> None:
    clean = smooth_photo(72, 104)  # not square, not a multiple of 8 or 64
    watermarked, mask = add_text_watermark(clean, "WM")
    inpainter = get_inpainter(name, tiny_settings, **FAST_OPTIONS.get(name, {}))

    cleaned = inpainter.inpaint(watermarked, mask)

    assert cleaned.shape == watermarked.shape and cleaned.dtype == np.uint8
    outside = mask == 0
    np.testing.assert_array_equal(cleaned[outside], watermarked[outside])
    assert (cleaned[~outside] != watermarked[~outside]).any()  # it did fill something
    empty = np.zeros_like(mask)
    untouched = inpainter.inpaint(watermarked, empty)
    np.testing.assert_array_equal(untouched, watermarked)
    assert untouched is not watermarked


# --- diffusers ---------------------------------------------------------------------------


def test_diffusers_inpaints_non_square_images_deterministically(tiny_settings: Settings) -> None:
    inpainter = get_inpainter("diffusers", tiny_settings, num_inference_steps=2, seed=3)
    again = get_inpainter("diffusers", tiny_settings, num_inference_steps=2, seed=3)
    assert again.pipeline is inpainter.pipeline  # loaded once per process
    assert type(inpainter.pipeline).__name__ == "StableDiffusionInpaintPipeline"

    wide = smooth_photo(90, 150)
    wide_watermarked, wide_mask = add_text_watermark(wide, "WIDE")
    tall = smooth_photo(130, 70)
    tall_watermarked, tall_mask = add_text_watermark(tall, "T")

    first = inpainter.inpaint(wide_watermarked, wide_mask)
    assert first.shape == (90, 150, 3)
    np.testing.assert_array_equal(again.inpaint(wide_watermarked, wide_mask), first)

    batch = inpaint_images(inpainter, [tall_watermarked, wide_watermarked, wide], [tall_mask, wide_mask, np.zeros_like(wide_mask)])
    assert [image.shape for image in batch] == [(130, 70, 3), (90, 150, 3), (90, 150, 3)]
    # Each image has its own seeded generator: a batch gives what single calls give.
    assert np.abs(batch[1].astype(int) - first).max() <= 2
    np.testing.assert_array_equal(batch[0][tall_mask == 0], tall_watermarked[tall_mask == 0])
    np.testing.assert_array_equal(batch[2], wide)


def test_diffusers_crop_covers_the_mask_at_pipeline_resolution(tiny_settings: Settings) -> None:
    inpainter = get_inpainter("diffusers", tiny_settings, num_inference_steps=1)
    fill = np.zeros((300, 500), bool)
    fill[270:290, 460:495] = True  # a small mark in the bottom-right corner of a big photo

    job = inpainter._crop_job(0, fill)

    assert 0 <= job.top <= 270 and 290 <= job.bottom <= 300
    assert 0 <= job.left <= 460 and 495 <= job.right <= 500
    assert job.bottom - job.top == job.right - job.left  # square context where the photo allows
    assert job.height % 8 == 0 and job.width % 8 == 0
    assert max(job.height, job.width) == TINY_RESOLUTION
    smaller = get_inpainter("diffusers", tiny_settings, num_inference_steps=1, resolution=40)._crop_job(0, fill)
    assert (smaller.height, smaller.width) == (40, 40)


def test_diffusers_without_a_configured_model_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(DiffusersModelNotFoundError) as excinfo:
        get_inpainter("diffusers", Settings(home=tmp_path, diffusers_model_dir=None))
    message = str(excinfo.value)
    assert "CLEARMARK_DIFFUSERS_MODEL_DIR is not set" in message
    assert "hf download" in message and "--inpainter telea" in message


def test_diffusers_with_a_missing_folder_or_uncached_repo_id_fails_clearly(tmp_path: Path) -> None:
    for configured in (tmp_path / "no-such-model", Path("someone/uncached-inpainting-model")):
        with pytest.raises(DiffusersModelNotFoundError, match="neither a folder nor a repo id"):
            get_inpainter("diffusers", Settings(home=tmp_path, diffusers_model_dir=configured))


def test_diffusers_rejects_a_folder_that_is_not_a_pipeline(tmp_path: Path) -> None:
    not_a_model = tmp_path / "weights"
    not_a_model.mkdir()
    (not_a_model / "model.safetensors").write_bytes(b"")
    with pytest.raises(DiffusersModelNotFoundError, match="no model_index.json"):
        get_inpainter("diffusers", Settings(home=tmp_path, diffusers_model_dir=not_a_model))


def test_opencv_inpainters_may_run_in_parallel_threads_and_diffusers_may_not(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert get_inpainter("telea", settings).thread_safe and get_inpainter("ns", settings).thread_safe
    assert inpaint.DiffusersInpainter.thread_safe is False
