"""Evaluation scores a detector the way removal runs it: at its working size, masks at full size."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from clearmark.model.detector import Detector, DetectorConfig, build_network
from clearmark.model.evaluate import evaluate_pairs

TINY = DetectorConfig(architecture="Unet", encoder="mobilenet_v2", image_size=64, decoder_channels=[16, 16, 16, 16, 8], threshold=0.5)


class BrightPixelDetector(Detector):
    """Calls bright pixels watermark and records the input sizes it was given."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__(build_network(TINY), config, version="test", device="cpu")
        self.seen: list[tuple[int, ...]] = []

    def predict_maps(self, batch: np.ndarray, **_: object) -> np.ndarray:
        self.seen.append(batch.shape)
        return (batch[..., :1] > 128).astype(np.float32)


def _square_pair() -> tuple[str, np.ndarray, np.ndarray]:
    image = np.zeros((512, 512, 3), np.uint8)
    image[64:320, 128:384] = 255
    mask = np.zeros((512, 512), bool)
    mask[64:320, 128:384] = True
    return "square", image, mask


@pytest.mark.parametrize(("detect_side", "seen"), [(128, (1, 128, 128, 3)), (None, (1, 512, 512, 3))])
def test_images_are_scored_at_the_working_size_against_the_full_size_mask(detect_side: int | None, seen: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    detector = BrightPixelDetector(replace(TINY, detect_side=detect_side))

    report = evaluate_pairs(detector, [_square_pair()], progress=False)

    assert detector.seen == [seen]
    assert report["iou"] == pytest.approx(1.0, abs=0.01)  # the upsampled mask covers the square, no dilation
    assert report["images"] == 1 and report["threshold"] == 0.5
