"""The quality benchmark: its image metrics on known values, and its figures on a tiny held-out set."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clearmark.bench.quality import DIFFUSERS_MODEL_MISSING, DIFFUSERS_SKIPPED, measure_quality
from clearmark.model.inference import DetectionOptions, detect_images
from clearmark.model.metrics import PSNR_CAP_DB, PixelCounts, psnr, ssim
from clearmark.removal.inpaint import UnknownInpainterError
from clearmark.settings import Settings
from tests.support.hostile_archives import white_mark_detector

IMAGES, SIZE, SEED = 6, 128, 99
C1 = (0.01 * 255) ** 2  # Wang et al.'s luminance constant for 8-bit images
SCORES = ("psnr_db", "ssim", "psnr_in_mask_db", "ssim_in_mask")


def _flat_ssim(a: float, b: float) -> float:
    """SSIM of two flat patches: no variance, so only the luminance term remains."""
    return (2 * a * b + C1) / (a * a + b * b + C1)


# --- PSNR and SSIM on constructed images --------------------------------------------------


def test_psnr_matches_its_definition() -> None:
    reference = np.zeros((8, 8, 3), np.uint8)
    assert psnr(reference, np.full_like(reference, 10)) == pytest.approx(10 * math.log10(255**2 / 100))
    image = reference.copy()
    image[:, :4], image[:, 4:] = 10, 20
    right = np.zeros((8, 8), bool)
    right[:, 4:] = True
    assert psnr(reference, image, right) == pytest.approx(10 * math.log10(255**2 / 400))
    assert psnr(reference, image) == pytest.approx(10 * math.log10(255**2 / 250))


def test_identical_pixels_score_the_cap_not_infinity() -> None:
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    changed = image.copy()
    changed[:8] ^= 1
    bottom = np.zeros((16, 16), bool)
    bottom[8:] = True
    assert psnr(image, image) == PSNR_CAP_DB
    assert psnr(image, changed, bottom) == PSNR_CAP_DB  # differences outside the mask do not count
    assert psnr(image, changed) < PSNR_CAP_DB


def test_ssim_matches_wang_et_al_on_flat_images() -> None:
    reference = np.full((32, 64, 3), 100, np.uint8)
    assert ssim(reference, reference) == pytest.approx(1.0)
    assert ssim(reference, np.full_like(reference, 110)) == pytest.approx(_flat_ssim(100, 110), abs=1e-6)

    image = reference.copy()
    image[:, 32:] = 110
    far_right = np.zeros((32, 64), bool)
    far_right[:, 50:58] = True  # the 11 x 11 window never reaches the left half from here
    assert ssim(reference, image, far_right) == pytest.approx(_flat_ssim(100, 110), abs=1e-6)
    far_left = np.zeros((32, 64), bool)
    far_left[:, 5:14] = True
    assert ssim(reference, image, far_left) == pytest.approx(1.0)
    assert ssim(reference, image) < 1.0


def test_an_empty_mask_is_refused() -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    nothing = np.zeros((16, 16), bool)
    with pytest.raises(ValueError, match="no pixels"):
        psnr(image, image, nothing)
    with pytest.raises(ValueError, match="no pixels"):
        ssim(image, image, nothing)


# --- the benchmark on a tiny held-out set ---------------------------------------------------


@pytest.fixture(scope="module")
def detector() -> Any:
    """A real Detector on a hand-made network: 'watermark' where every channel is bright (above 0.7)."""
    return white_mark_detector(level=0.7)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quality")


@pytest.fixture(scope="module")
def figures(detector: Any, work: Path, settings: Settings) -> dict[str, Any]:
    return measure_quality(detector, work, images=IMAGES, size=SIZE, seed=SEED, progress=False, settings=settings)


def _load(work: Path, part: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted((work / "heldout" / part).glob("*.png"))]


def test_figures_have_the_documented_shape(figures: dict[str, Any]) -> None:
    assert json.loads(json.dumps(figures, allow_nan=False)) == figures
    held_out = figures["held_out_set"]
    assert (held_out["images"], held_out["size"], held_out["seed"]) == (IMAGES, SIZE, SEED)
    assert "heldout" in held_out["styles"] and "STIXGeneral" in held_out["styles"]
    assert set(figures["mask"]) == {"iou", "dice", "precision", "recall"}
    assert list(figures["removal"]) == ["nothing", "telea_true_mask", "telea_predicted_mask", "diffusers_predicted_mask"]
    assert figures["removal"]["diffusers_predicted_mask"] == {"skipped": DIFFUSERS_SKIPPED}
    for method in ("nothing", "telea_true_mask", "telea_predicted_mask"):
        entry = figures["removal"][method]
        assert set(entry) == {*SCORES, "seconds"}
        assert all(entry[name] == round(entry[name], 4) for name in entry)
        assert all(0 <= entry[name] <= 1 for name in ("ssim", "ssim_in_mask"))
    assert figures["removal"]["nothing"]["seconds"] == 0
    assert figures["removal"]["telea_predicted_mask"]["seconds"] > 0


def test_mask_metrics_are_those_of_the_production_detection_path(
    figures: dict[str, Any], detector: Any, work: Path, settings: Settings
) -> None:
    options = dataclasses.replace(DetectionOptions.for_detector(detector, settings), threshold=detector.config.threshold, dilate_px=0)
    detections = detect_images(detector, _load(work, "watermarked"), options)
    counts = sum(
        (PixelCounts.from_masks(d.mask > 0, truth > 0) for d, truth in zip(detections, _load(work, "masks"), strict=True)), PixelCounts()
    )
    assert min(counts.tp, counts.fp, counts.fn) > 0  # a partial detection: every count matters
    assert figures["mask"] == {name: round(value, 4) for name, value in counts.as_dict().items() if name != "accuracy"}


def test_inpainting_the_true_mask_beats_doing_nothing(figures: dict[str, Any]) -> None:
    nothing, true_mask = figures["removal"]["nothing"], figures["removal"]["telea_true_mask"]
    assert nothing["psnr_in_mask_db"] < true_mask["psnr_in_mask_db"]
    assert nothing["ssim_in_mask"] < true_mask["ssim_in_mask"]
    assert nothing["psnr_db"] < true_mask["psnr_db"]


def test_doing_nothing_only_errs_inside_the_mask(figures: dict[str, Any], work: Path) -> None:
    """Outside the mask watermarked == clean, so whole-image MSE = coverage x in-mask MSE, per image."""
    nothing = figures["removal"]["nothing"]
    dilution = np.mean([-10 * math.log10(float((mask > 0).mean())) for mask in _load(work, "masks")])
    assert nothing["psnr_db"] == pytest.approx(nothing["psnr_in_mask_db"] + dilution, abs=2e-4)
    assert nothing["ssim_in_mask"] < nothing["ssim"] < 1


def test_the_held_out_set_is_the_generators(work: Path, tmp_path: Path) -> None:
    from clearmark.data.synth import generate_synthetic

    generate_synthetic(tmp_path / "heldout", IMAGES, SEED, size=SIZE, styles="heldout", progress=False)
    for part in ("clean", "watermarked", "masks"):
        assert all(np.array_equal(a, b) for a, b in zip(_load(work, part), _load(tmp_path, part), strict=True))


@pytest.mark.parametrize(
    ("inpainters", "error", "message"), [(("diffusers",), ValueError, "diffusers=True"), (("nope",), UnknownInpainterError, "telea")]
)
def test_bad_inpainters_fail_before_any_image_is_made(
    detector: Any, tmp_path: Path, inpainters: tuple[str, ...], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        measure_quality(detector, tmp_path / "work", images=2, size=64, inpainters=inpainters, progress=False, settings=Settings(home=tmp_path / "home"))
    assert not (tmp_path / "work").exists()


def test_diffusers_and_other_inpainters_get_their_own_entries(detector: Any, tmp_path: Path) -> None:
    """With diffusers=True (a tiny random Stable Diffusion pipeline here) it is run and scored, not skipped."""
    import torch

    from tests.support.tiny_diffusers import save_tiny_inpaint_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's small ops are slower with threads waiting on each other
    try:
        settings = Settings(home=tmp_path / "home", diffusers_model_dir=save_tiny_inpaint_pipeline(tmp_path / "tiny-sd"))
        figures = measure_quality(
            detector, tmp_path / "work", images=2, size=64, inpainters=("ns",), diffusers=True, progress=False, settings=settings
        )
    finally:
        torch.set_num_threads(threads)
    removal = figures["removal"]
    assert list(removal) == ["nothing", "ns_true_mask", "ns_predicted_mask", "diffusers_predicted_mask"]
    assert set(removal["diffusers_predicted_mask"]) == {*SCORES, "seconds"}
    assert removal["diffusers_predicted_mask"]["seconds"] > 0
    assert json.loads(json.dumps(figures, allow_nan=False)) == figures


def test_a_missing_diffusers_model_skips_only_that_figure(detector: Any, tmp_path: Path) -> None:
    """The GPU profile on a machine without a local Stable Diffusion model keeps every other figure."""
    settings = Settings(home=tmp_path / "home", diffusers_model_dir=tmp_path / "no-such-model")
    figures = measure_quality(detector, tmp_path / "work", images=2, size=64, diffusers=True, progress=False, settings=settings)
    assert figures["removal"]["diffusers_predicted_mask"] == {"skipped": DIFFUSERS_MODEL_MISSING}
    assert figures["removal"]["telea_predicted_mask"]["seconds"] > 0
