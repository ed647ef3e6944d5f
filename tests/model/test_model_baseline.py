"""The bundled baseline detector (models/baseline/): what it ships, and that its recorded metrics are true."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clearmark.model.detector import load_detector_folder
from clearmark.model.metrics import quality_label
from clearmark.settings import REPO_ROOT

BASELINE = REPO_ROOT / "models" / "baseline"


def test_baseline_ships_weights_card_and_metrics() -> None:
    weights = BASELINE / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 25 * 1024 * 1024
    card = (BASELINE / "MODEL_CARD.md").read_text()
    for section in ("## Metrics", "## Intended use", "## Limitations", "training data version"):
        assert section in card
    metrics = json.loads((BASELINE / "metrics.json").read_text())
    for name in ("test_iou", "test_dice", "test_precision", "test_recall", "test_accuracy"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["test_quality"] == quality_label(metrics["test_iou"])


def test_baseline_predicts_at_sizes_it_never_trained_on() -> None:
    detector = load_detector_folder(BASELINE, device="cpu")
    assert detector.config.image_size == 256  # its last stage trained on whole 256 px images
    probabilities = detector.predict_proba(np.full((1, 200, 301, 3), 127, np.uint8))
    assert probabilities.shape == (1, 200, 301)


@pytest.mark.slow
def test_recorded_metrics_match_a_fresh_evaluation_on_the_embedded_test_split(tmp_path: Path) -> None:
    """Regenerates the embedded synthetic dataset (config/sources.yaml) and re-measures the test split."""
    from clearmark.data.catalog import load_training_data
    from clearmark.data.sources import load_sources
    from clearmark.data.synth import generate_synthetic
    from clearmark.model.evaluate import evaluate_split
    from clearmark.settings import load_settings

    settings = load_settings(home=tmp_path / "home")
    (source,) = load_sources(settings.sources_file).dataset("synthetic").sources
    options = source.synthetic
    generate_synthetic(tmp_path / "embedded", options.count, options.seed, size=options.size, progress=False)
    data = load_training_data(settings, "synthetic", data_dir=tmp_path / "embedded")
    report = evaluate_split(load_detector_folder(BASELINE, device="cpu"), data, "test", progress=False)
    recorded = json.loads((BASELINE / "metrics.json").read_text())
    assert report["images"] == recorded["test_images"]
    for name in ("iou", "dice", "precision", "recall"):
        assert report[name] == pytest.approx(recorded[f"test_{name}"], abs=0.005), name


@pytest.mark.parametrize("styles", ["train", "heldout"])
def test_baseline_finds_more_of_the_mark_at_its_working_size_than_at_native_resolution(tmp_path: Path, styles: str) -> None:
    """config.json's detect_side (384) is the scale its training showed watermarks at: 512 px photos gain from it."""
    from PIL import Image

    from clearmark.data.synth import generate_synthetic
    from clearmark.model.inference import DetectionOptions, detect_images
    from clearmark.model.metrics import PixelCounts

    detector = load_detector_folder(BASELINE, device="cpu")
    assert detector.config.detect_side == 384
    summary = generate_synthetic(tmp_path, 16, seed=99, size=512, styles=styles, progress=False)
    images = [np.asarray(Image.open(summary.out_dir / "watermarked" / name).convert("RGB")) for name in summary.names]
    truths = [np.asarray(Image.open(summary.out_dir / "masks" / name)) > 127 for name in summary.names]
    iou = {}
    for side in (None, detector.config.detect_side):
        counts = PixelCounts()
        options = DetectionOptions(threshold=detector.config.threshold, dilate_px=0, detect_side=side)
        for found, truth in zip(detect_images(detector, images, options), truths, strict=True):
            counts = counts + PixelCounts.from_masks(found.mask > 0, truth)
        iou[side] = counts.iou
    assert iou[384] > iou[None] + 0.02, iou
