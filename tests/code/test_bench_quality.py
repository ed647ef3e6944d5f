"""The quality benchmark: its image metrics on known values, its held-out set, and its figures on a tiny set."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from clearmark.bench.crops import CROP_SIDES, LABEL_PX, TILE_PX, crop_box
from clearmark.bench.heldout import HeldOutSet, HeldOutSpec, heldout_set, load_truth
from clearmark.bench.measure import machine_record
from clearmark.bench.quality import CROP_SAMPLES, DIFFUSERS_MODEL_MISSING, DIFFUSERS_SKIPPED, measure_quality, worse_than_input
from clearmark.bench.table import markdown_table
from clearmark.data.photos import sources_for
from clearmark.data.synth import PROCEDURAL_WEIGHTS
from clearmark.model.inference import DetectionOptions, detect_images
from clearmark.model.metrics import PSNR_CAP_DB, PixelCounts, psnr, ssim
from clearmark.removal.inpaint import UnknownInpainterError, get_inpainter
from clearmark.removal.restore import DEFAULT_ALPHA_LIMIT, unblend
from clearmark.removal.runner import run_removal
from clearmark.settings import Settings
from tests.support.hostile_archives import white_mark_detector

SPEC = HeldOutSpec(images=5, sizes=(96, 128), jpeg_share=0.6, seed=11)  # a seed whose marks the white-mark detector half finds
METHODS = ["nothing", "telea_true_mask", "telea_predicted_mask", "unblend_true_matte", "pipeline", "diffusers_predicted_mask"]
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


def test_ssim_is_scikit_images_structural_similarity(tmp_path: Path) -> None:
    """The same figure as the reference implementation, on a photo and a JPEG of it and on noise."""
    from skimage.metrics import structural_similarity

    from clearmark.model.metrics import ssim_map

    rng = np.random.default_rng(3)
    photo = np.asarray(Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((160, 120), Image.Resampling.BICUBIC))
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=60)
    pairs = [(photo, np.asarray(Image.open(tmp_path / "photo.jpg"))), (photo, rng.integers(0, 256, photo.shape, dtype=np.uint8))]
    for reference, image in pairs:
        expected, expected_map = structural_similarity(
            reference.astype(np.float64), image.astype(np.float64), channel_axis=2, data_range=255,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True,
        )  # fmt: skip
        score, per_pixel = ssim_map(reference, image)
        assert score == pytest.approx(expected, abs=1e-5)
        assert np.abs(per_pixel - expected_map.mean(axis=2)).max() < 1e-3


def test_an_empty_mask_is_refused() -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    nothing = np.zeros((16, 16), bool)
    with pytest.raises(ValueError, match="no pixels"):
        psnr(image, image, nothing)
    with pytest.raises(ValueError, match="no pixels"):
        ssim(image, image, nothing)


# --- the held-out set ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def held(settings: Settings) -> HeldOutSet:
    """The set the bench reads: measure_quality finds it in the same cache."""
    return heldout_set(settings.home / "bench" / "cache", SPEC, progress=False)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file() and path.name != "set.json"}


def test_the_held_out_set_mixes_sizes_and_formats_as_asked(held: HeldOutSet) -> None:
    summary = held.describe()
    assert summary["images"] == 5 and summary["sizes"] == {96: 3, 128: 2}
    jpegs = [item for item in held.items if item.input.endswith(".jpg")]
    assert len(jpegs) == round(0.6 * 5) and summary["jpeg_share"] == 0.6
    assert all(88 <= item.jpeg_quality <= 98 for item in jpegs)
    assert all(item.jpeg_quality is None and item.input.endswith(".png") for item in held.items if item not in jpegs)
    for item in held.items:
        truth = load_truth(held, item)
        assert truth.clean.shape == truth.watermarked.shape == (item.size, item.size, 3)
        assert truth.mask.any() and np.array_equal(truth.mask, truth.alpha > 0)
        with Image.open(held.inputs / item.input) as image:
            assert image.format == ("JPEG" if item.jpeg_quality else "PNG")


def test_the_held_out_set_draws_on_held_out_photos_and_fonts_only(held: HeldOutSet) -> None:
    heldout_sources = {source.name for source in sources_for("heldout")}
    assert {item.background for item in held.items} <= heldout_sources | set(PROCEDURAL_WEIGHTS)
    assert any(item.background in heldout_sources for item in held.items)
    assert "photo-heldout" in held.describe()["styles"]


def test_png_inputs_reproduce_the_blend_of_their_true_matte(held: HeldOutSet) -> None:
    """J = alpha * W + (1 - alpha) * I on the saved files: what the unblending ceiling inverts."""
    for item in (item for item in held.items if item.jpeg_quality is None):
        truth = load_truth(held, item)
        blend = truth.alpha[..., None] * truth.colour * 255 + (1 - truth.alpha[..., None]) * truth.clean
        assert np.abs(blend - truth.watermarked).max() <= 1.0


def test_the_held_out_set_is_the_same_for_the_same_spec_and_read_back_from_the_cache(held: HeldOutSet, tmp_path: Path) -> None:
    again = heldout_set(held.folder.parent, SPEC, progress=False)
    assert again.cached and again.folder == held.folder and again.items == held.items
    fresh = heldout_set(tmp_path, SPEC, progress=False)
    assert not fresh.cached and fresh.folder.name == held.folder.name
    assert _files(fresh.folder) == _files(held.folder)
    other = heldout_set(tmp_path, dataclasses.replace(SPEC, seed=SPEC.seed + 1), progress=False)
    assert other.folder != fresh.folder and _files(other.folder)["clean/heldout_0000.png"] != _files(fresh.folder)["clean/heldout_0000.png"]


# --- the benchmark on the tiny set -----------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Model sources that clearmark's loader resolves to the real Detectors of this dict (add one by its folder)."""
    from clearmark.model import loading

    detectors: dict[str, Any] = {}
    load = loading.load_detector

    def load_served(model: str, *args: Any, **kwargs: Any) -> Any:
        return detectors[model] if model in detectors else load(model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "load_detector", load_served)
        yield detectors


def _serve(served: dict[str, Any], folder: Path, level: float) -> str:
    served[str(folder)] = white_mark_detector(level=level)
    return str(folder)


@pytest.fixture(scope="module")
def white_marks(served: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A detector that marks bright pixels: on this set it finds part of the marks and some photo."""
    return _serve(served, tmp_path_factory.mktemp("white-marks"), 0.7)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quality")


@pytest.fixture(scope="module")
def figures(settings: Settings, white_marks: str, held: HeldOutSet, work: Path) -> dict[str, Any]:
    return measure_quality(settings, white_marks, work, spec=SPEC, crops=work / "crops.png", progress=False)


def _mean_scores(cleaned: list[np.ndarray], truths: list[Any]) -> dict[str, float]:
    """The figures' four means, computed here image by image."""
    scores = {name: [] for name in SCORES}
    for image, truth in zip(cleaned, truths, strict=True):
        scores["psnr_db"].append(psnr(truth.clean, image))
        scores["ssim"].append(ssim(truth.clean, image))
        scores["psnr_in_mask_db"].append(psnr(truth.clean, image, truth.mask))
        scores["ssim_in_mask"].append(ssim(truth.clean, image, truth.mask))
    return {name: round(statistics.fmean(values), 4) for name, values in scores.items()}


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_figures_have_the_documented_shape(figures: dict[str, Any], held: HeldOutSet) -> None:
    assert json.loads(json.dumps(figures, allow_nan=False)) == json.loads(json.dumps(figures))
    assert figures["held_out_set"]["key"] == held.folder.name and figures["held_out_set"]["cached"]
    assert set(figures["mask"]) == {"iou", "dice", "precision", "recall"}
    assert list(figures["removal"]) == METHODS
    assert figures["removal"]["diffusers_predicted_mask"] == {"skipped": DIFFUSERS_SKIPPED}
    for method in METHODS[:-1]:
        entry = figures["removal"][method]
        assert set(SCORES) <= set(entry) and "seconds" in entry
        assert all(entry[name] == round(entry[name], 4) for name in SCORES)
        assert all(0 <= entry[name] <= 1 for name in ("ssim", "ssim_in_mask"))
        assert ("worse_than_input" in entry) == (method != "nothing")
    assert figures["removal"]["nothing"]["seconds"] == 0
    assert figures["removal"]["telea_predicted_mask"]["seconds"] > 0 and figures["removal"]["pipeline"]["seconds"] > 0
    assert figures["removal"]["pipeline"]["restorer"] == Settings().inpainter
    pipeline = figures["removal"]["pipeline"]
    assert sum(pipeline["statuses"].values()) == sum(pipeline["restorations"].values()) == len(held.items)
    assert 0 <= pipeline["unblended_share"] <= 1 and 0 <= pipeline["inpainted_share"] <= 1


def test_mask_metrics_are_those_of_the_production_detection_path(figures: dict[str, Any], held: HeldOutSet, settings: Settings) -> None:
    detector = white_mark_detector(level=0.7)
    options = dataclasses.replace(DetectionOptions.for_detector(detector, settings), threshold=detector.config.threshold, dilate_px=0)
    truths = [load_truth(held, item) for item in held.items]
    detections = detect_images(detector, [t.watermarked for t in truths], options)
    counts = sum((PixelCounts.from_masks(d.mask > 0, t.mask) for d, t in zip(detections, truths, strict=True)), PixelCounts())
    assert min(counts.tp, counts.fp, counts.fn) > 0  # a partial detection: every count matters
    assert figures["mask"] == {name: round(value, 4) for name, value in counts.as_dict().items() if name != "accuracy"}


def test_the_pipeline_row_scores_what_clearmark_remove_writes(
    figures: dict[str, Any], held: HeldOutSet, settings: Settings, white_marks: str, work: Path, tmp_path: Path
) -> None:
    again = run_removal(settings, held.inputs, tmp_path / "again", model=white_marks).output
    assert _files(again) == _files(work / "pipeline")  # the bench's outputs are the pipeline's, byte for byte
    truths = [load_truth(held, item) for item in held.items]
    cleaned = [_read(again / item.input) for item in held.items]
    pipeline = figures["removal"]["pipeline"]
    assert {name: pipeline[name] for name in SCORES} == _mean_scores(cleaned, truths)
    worse = [item.name for item, image, t in zip(held.items, cleaned, truths, strict=True) if psnr(t.clean, image) < psnr(t.clean, t.watermarked)]
    assert 0 < len(worse) < len(held.items)  # some images made worse, some not: the count is not trivial
    assert pipeline["worse_images"] == worse and pipeline["worse_than_input"] == round(len(worse) / len(held.items), 4)


def test_the_unblending_ceiling_inverts_the_true_matte(figures: dict[str, Any], held: HeldOutSet, settings: Settings) -> None:
    telea = get_inpainter("telea", settings)
    truths = [load_truth(held, item) for item in held.items]
    cleaned = []
    for truth in truths:
        restored, hole = unblend(truth.watermarked, truth.alpha, truth.colour, limit=DEFAULT_ALPHA_LIMIT)
        cleaned.append(telea.inpaint(restored, hole) if hole.any() else restored)
    ceiling = figures["removal"]["unblend_true_matte"]
    assert {name: ceiling[name] for name in SCORES} == _mean_scores(cleaned, truths)
    assert ceiling["psnr_in_mask_db"] > figures["removal"]["nothing"]["psnr_in_mask_db"]


@pytest.mark.parametrize("removal_threshold", [None, 0.9])
def test_the_predicted_mask_row_inpaints_productions_masks(
    settings: Settings, white_marks: str, held: HeldOutSet, tmp_path: Path, removal_threshold: float | None
) -> None:
    """With the detector's own threshold (one detection pass serves the mask figures too) and with another one."""
    configured = settings.model_copy(update={"removal_threshold": removal_threshold})
    figures = measure_quality(configured, white_marks, tmp_path / "work", spec=SPEC, progress=False)
    detector = white_mark_detector(level=0.7)
    truths = [load_truth(held, item) for item in held.items]
    detections = detect_images(detector, [t.watermarked for t in truths], DetectionOptions.for_detector(detector, configured))
    telea = get_inpainter("telea", settings)
    cleaned = [telea.inpaint(t.watermarked, d.mask) for t, d in zip(truths, detections, strict=True)]
    predicted = figures["removal"]["telea_predicted_mask"]
    assert {name: predicted[name] for name in SCORES} == _mean_scores(cleaned, truths)
    assert figures["detection"]["inpainting_threshold"] == (removal_threshold or detector.config.threshold)


def test_inpainting_the_true_mask_beats_doing_nothing_inside_it(figures: dict[str, Any]) -> None:
    nothing, true_mask = figures["removal"]["nothing"], figures["removal"]["telea_true_mask"]
    assert nothing["psnr_in_mask_db"] < true_mask["psnr_in_mask_db"]
    assert nothing["ssim_in_mask"] < true_mask["ssim_in_mask"]


def test_the_crops_png_shows_the_spread_of_results(figures: dict[str, Any], work: Path) -> None:
    rows = min(CROP_SAMPLES, SPEC.images)
    with Image.open(work / figures["crops"]) as sheet:
        assert sheet.format == "PNG" and sheet.size == (3 * TILE_PX, LABEL_PX + rows * (LABEL_PX + TILE_PX))


def test_a_crop_is_a_square_around_the_mark_within_the_image() -> None:
    mask = np.zeros((600, 800), bool)
    mask[500:520, 700:790] = True  # a small corner signature
    top, left, side = crop_box(mask)
    assert side == CROP_SIDES[0] and 0 <= top <= 500 and top + side >= 520 and top + side <= 600 and left + side <= 800
    mask[:] = True  # a tiled mark everywhere: a legible part of it, not the whole image shrunk
    assert crop_box(mask)[2] == CROP_SIDES[1]


def test_worse_than_input_counts_images_below_doing_nothing() -> None:
    assert worse_than_input([30.0, 29.9, 40.0, 31.0], [30.0, 30.0, 35.0, 32.0]) == 0.5  # a tie is not worse
    with pytest.raises(ValueError, match="one baseline score per image"):
        worse_than_input([30.0], [30.0, 31.0])


def test_a_pipeline_that_finds_nothing_scores_as_doing_nothing(settings: Settings, served: dict[str, Any], tmp_path: Path) -> None:
    """PNG inputs found clean come back byte-identical; outside the mark they equal the clean image, so
    whole-image MSE = coverage x in-mark MSE, per image."""
    spec = dataclasses.replace(SPEC, jpeg_share=0.0)
    model = _serve(served, tmp_path / "blind", level=2.0)  # no pixel is brighter than white
    figures = measure_quality(settings, model, tmp_path / "work", spec=spec, progress=False)
    nothing, pipeline = figures["removal"]["nothing"], figures["removal"]["pipeline"]
    assert {name: pipeline[name] for name in SCORES} == {name: nothing[name] for name in SCORES}
    assert pipeline["worse_than_input"] == 0.0 and pipeline["statuses"] == {"unchanged_no_watermark": spec.images}
    held = heldout_set(settings.home / "bench" / "cache", spec, progress=False)
    dilution = np.mean([-10 * math.log10(float(load_truth(held, item).mask.mean())) for item in held.items])
    assert nothing["psnr_db"] == pytest.approx(nothing["psnr_in_mask_db"] + dilution, abs=2e-4)


@pytest.mark.parametrize(
    ("inpainters", "error", "message"), [(("diffusers",), ValueError, "diffusers=True"), (("nope",), UnknownInpainterError, "telea")]
)
def test_bad_inpainters_fail_before_any_image_is_made(white_marks: str, tmp_path: Path, inpainters: tuple[str, ...], error: type, message: str) -> None:
    settings = Settings(home=tmp_path / "home")
    with pytest.raises(error, match=message):
        measure_quality(settings, white_marks, tmp_path / "work", spec=SPEC, inpainters=inpainters, progress=False)
    assert not (tmp_path / "work").exists() and not (tmp_path / "home" / "bench").exists()


def test_diffusers_and_other_inpainters_get_their_own_entries(settings: Settings, white_marks: str, tmp_path: Path) -> None:
    """With diffusers=True (a tiny random Stable Diffusion pipeline here) it is run and scored, not skipped."""
    from tests.support.tiny_diffusers import save_tiny_inpaint_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's small ops are slower with threads waiting on each other
    try:
        tiny = settings.model_copy(update={"diffusers_model_dir": save_tiny_inpaint_pipeline(tmp_path / "tiny-sd")})
        spec = dataclasses.replace(SPEC, images=2)
        figures = measure_quality(tiny, white_marks, tmp_path / "work", spec=spec, inpainters=("ns",), diffusers=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    removal = figures["removal"]
    assert list(removal) == ["nothing", "ns_true_mask", "ns_predicted_mask", "diffusers_predicted_mask", "unblend_true_matte", "pipeline"]
    assert set(SCORES) <= set(removal["diffusers_predicted_mask"]) and removal["diffusers_predicted_mask"]["seconds"] > 0


def test_a_missing_diffusers_model_skips_only_that_figure(settings: Settings, white_marks: str, tmp_path: Path) -> None:
    """The GPU profile on a machine without a local Stable Diffusion model keeps every other figure."""
    missing = settings.model_copy(update={"diffusers_model_dir": tmp_path / "no-such-model"})
    figures = measure_quality(missing, white_marks, tmp_path / "work", spec=dataclasses.replace(SPEC, images=2), diffusers=True, progress=False)
    assert figures["removal"]["diffusers_predicted_mask"] == {"skipped": DIFFUSERS_MODEL_MISSING}
    assert figures["removal"]["telea_predicted_mask"]["seconds"] > 0


# --- the machine and the targets in the results -----------------------------------------------


def test_every_results_file_records_the_machine() -> None:
    machine = machine_record()
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["cpu"] and machine["cpu_count"] >= machine["usable_cores"] >= 1
    figures = {"profile": {"name": "cpu"}, "started_at": "now", "machine": machine, "model": "m", "seconds": {"total": 1.0}}
    assert f"CPU capability `{machine['cpu_capability']}`" in markdown_table(figures)


def _quality(iou: float, pipeline_whole: float, pipeline_in_mark: float, worse: int) -> dict[str, Any]:
    def scores(whole: float, in_mark: float) -> dict[str, Any]:
        return {"psnr_db": whole, "ssim": 0.9, "psnr_in_mask_db": in_mark, "ssim_in_mask": 0.8, "seconds": 1.0, "worse_than_input": 0.0}

    return {
        "held_out_set": {"images": 100, "sizes": {512: 50, 1024: 50}, "jpeg_share": 0.7},
        "mask": {"iou": iou, "dice": 0.9, "precision": 0.9, "recall": 0.9},
        "removal": {
            "nothing": scores(30.0, 17.0),
            "telea_true_mask": scores(37.0, 27.0),
            "pipeline": {**scores(pipeline_whole, pipeline_in_mark), "restorer": "restore", "worse_than_input": worse / 100,
                         "worse_images": [f"heldout_{i:04d}" for i in range(worse)], "unblended_share": 0.6, "inpainted_share": 0.4},
        },  # fmt: skip
        "crops": "2026-01-01-x-quality.png",
    }


def test_quality_targets_are_marked_met_or_missed() -> None:
    from clearmark.bench.table import _quality_rows

    met = _quality_rows(_quality(iou=0.85, pipeline_whole=37.0, pipeline_in_mark=30.0, worse=2))
    assert [row[4].endswith("met") for row in met if row[4]] == [True, True, True, True]
    missed = _quality_rows(_quality(iou=0.79, pipeline_whole=36.9, pipeline_in_mark=29.9, worse=3))
    assert [row[4].endswith("**missed**") for row in missed if row[4]] == [True, True, True, True]
    assert any("2026-01-01-x-quality.png" in row[1] for row in met)
