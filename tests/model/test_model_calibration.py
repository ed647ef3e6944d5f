"""Calibration after training: BatchNorm statistics from un-augmented training images, the threshold from validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clearmark.data.catalog import load_training_data
from clearmark.data.synth import generate_synthetic
from clearmark.model.calibrate import calibrate_detector, calibrate_threshold, recalibrate_batchnorm
from clearmark.model.detector import Detector, DetectorConfig, build_network, load_detector_folder, save_detector, update_detector_metrics
from clearmark.settings import Settings

CONFIG = DetectorConfig(architecture="Unet", encoder="mobilenet_v2", image_size=64, decoder_channels=[16, 16, 16, 16, 8])


class FixedProbabilities(Detector):
    """A real detector whose probabilities are given per image (what calibration reads)."""

    def __init__(self, probabilities: list[np.ndarray]) -> None:
        super().__init__(build_network(CONFIG), CONFIG, version="fixed", device="cpu")
        self.queue = list(probabilities)

    def predict_maps(self, batch: np.ndarray, **_: object) -> np.ndarray:
        return self.queue.pop(0)[None, ..., None]


def test_calibration_finds_the_threshold_that_separates_the_mask() -> None:
    rng = np.random.default_rng(0)
    probabilities = [rng.uniform(0, 1, (32, 32)).astype(np.float32) for _ in range(3)]
    truths = [p > 0.7 for p in probabilities]  # the watermark is exactly what scores above 0.7
    pairs = [(f"img{i}", np.zeros((32, 32, 3), np.uint8), truth) for i, truth in enumerate(truths)]

    result = calibrate_threshold(FixedProbabilities(probabilities), pairs, progress=False)

    assert result["threshold"] == 0.7 and result["iou"] == 1.0 and result["images"] == 3
    assert result["iou_at_current"] < 1.0  # the detector's own 0.5 also marks the 0.5-0.7 pixels
    assert max(result["by_threshold"], key=result["by_threshold"].get) == 0.7
    with pytest.raises(ValueError, match="no pairs"):
        calibrate_threshold(FixedProbabilities([]), [], progress=False)


def test_calibrated_threshold_is_written_into_config_and_card(tmp_path: Path) -> None:
    torch.manual_seed(0)
    folder = save_detector(build_network(CONFIG), CONFIG, tmp_path / "det", metrics={"val_iou": 0.5})
    history = [{"epoch": 1, "elapsed_s": 60.0, "val_iou": 0.5}]
    update_detector_metrics(folder, {"val_iou_calibrated": 0.6, "history": history}, threshold=0.35)
    assert load_detector_folder(folder).config.threshold == 0.35
    assert json.loads((folder / "metrics.json").read_text()) == {"val_iou": 0.5, "val_iou_calibrated": 0.6, "history": history}
    card = (folder / "MODEL_CARD.md").read_text()
    assert "| mask threshold | 0.35 |" in card and "| val_iou_calibrated | 0.6000 |" in card and "history" not in card  # scalars only
    with pytest.raises(Exception, match="threshold must lie strictly between 0 and 1"):
        update_detector_metrics(folder, {}, threshold=1.5)


def test_batchnorm_recalibration_re_estimates_statistics_and_leaves_weights_alone() -> None:
    torch.manual_seed(1)
    detector = Detector(build_network(CONFIG), CONFIG, version="x", device="cpu")
    norm = next(m for m in detector.network.modules() if isinstance(m, torch.nn.BatchNorm2d))
    weights = {k: v.clone() for k, v in detector.network.state_dict().items() if "running" not in k and "num_batches" not in k}
    images = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(6)]

    assert recalibrate_batchnorm(detector, images, batch_size=4) == 6
    first = norm.running_mean.clone()
    assert not torch.allclose(first, torch.zeros_like(first))  # estimated, not the reset value
    assert norm.momentum == 0.1 and not detector.network.training  # restored
    assert recalibrate_batchnorm(detector, images, batch_size=4) == 6
    torch.testing.assert_close(norm.running_mean, first)  # a fresh estimate each time, not a drift
    state = detector.network.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())


def test_calibrate_detector_never_lowers_validation_iou(tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "data", 40, 5, size=64, progress=False)
    data = load_training_data(Settings(home=tmp_path / "home"), "synthetic", None, tmp_path / "data")
    torch.manual_seed(2)
    folder = save_detector(build_network(CONFIG), CONFIG, tmp_path / "det", metrics={"val_iou": 0.1})
    sha_before = json.loads((folder / "config.json").read_text())["weights_sha256"]

    result = calibrate_detector(folder, data, progress=False)

    assert result["iou"] >= result["val_iou_before"]
    detector = load_detector_folder(folder)
    assert detector.config.threshold == result["threshold"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["val_iou"] == 0.1 and metrics["val_iou_calibrated"] == result["iou"]
    changed = json.loads((folder / "config.json").read_text())["weights_sha256"] != sha_before
    assert changed == metrics["batchnorm_recalibrated"] == (result["batchnorm_images"] > 0)
