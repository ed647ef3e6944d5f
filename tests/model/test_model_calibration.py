"""Threshold calibration picks the IoU-best threshold on validation pairs and records it in the folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clearmark.model.detector import Detector, DetectorConfig, build_network, load_detector, save_detector, update_detector_metrics
from clearmark.model.evaluate import calibrate_threshold

CONFIG = DetectorConfig(architecture="Unet", encoder="mobilenet_v2", image_size=64, decoder_channels=[16, 16, 16, 16, 8])


class FixedProbabilities(Detector):
    """A real detector whose probabilities are given per image (what calibration reads)."""

    def __init__(self, probabilities: list[np.ndarray]) -> None:
        super().__init__(build_network(CONFIG), CONFIG, version="fixed", device="cpu")
        self.queue = list(probabilities)

    def predict_proba(self, batch: np.ndarray, **_: object) -> np.ndarray:
        return self.queue.pop(0)[None]


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
    assert load_detector(folder).config.threshold == 0.35
    assert json.loads((folder / "metrics.json").read_text()) == {"val_iou": 0.5, "val_iou_calibrated": 0.6, "history": history}
    card = (folder / "MODEL_CARD.md").read_text()
    assert "| mask threshold | 0.35 |" in card and "| val_iou_calibrated | 0.6000 |" in card and "history" not in card  # scalars only
    with pytest.raises(Exception, match="threshold must lie strictly between 0 and 1"):
        update_detector_metrics(folder, {}, threshold=1.5)
