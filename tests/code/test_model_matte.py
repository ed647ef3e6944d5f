"""A matte detector: five output maps (probability, alpha, colour W) at any size, through inference's one path."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from clearmark.model.detector import Detector, DetectorConfig, DetectorError, build_network, load_detector_folder, save_detector
from clearmark.model.inference import DetectionOptions, detect_images

MATTE = DetectorConfig(architecture="Unet", encoder="mobilenet_v2", image_size=64, decoder_channels=[16, 16, 16, 16, 8], outputs="matte")


@pytest.fixture(scope="module")
def matte_detector() -> Detector:
    torch.manual_seed(0)
    return Detector(build_network(MATTE), MATTE, version="matte", device="cpu")


@pytest.mark.parametrize("shape", [(1, 37, 53, 3), (2, 64, 96, 3), (1, 130, 31, 3)])
def test_a_matte_detector_predicts_probability_alpha_and_colour_at_any_size(matte_detector: Detector, shape: tuple[int, ...]) -> None:
    batch = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    probability, alpha, colour = matte_detector.predict_matte(batch)
    assert probability.shape == alpha.shape == shape[:3] and colour.shape == shape
    for output in (probability, alpha, colour):
        assert output.dtype == np.float32 and 0.0 <= float(output.min()) and float(output.max()) <= 1.0
    np.testing.assert_array_equal(matte_detector.predict_proba(batch), probability)
    assert not np.allclose(alpha, probability)  # its own channel, not a copy of the footprint


def test_a_mask_detector_has_no_matte_and_old_folders_load_as_mask_detectors(tmp_path: Path) -> None:
    mask_config = replace(MATTE, outputs="mask")
    network = build_network(mask_config)
    assert network.segmentation_head[0].out_channels == 1
    folder = save_detector(network, mask_config, tmp_path / "old")
    record = json.loads((folder / "config.json").read_text())
    del record["outputs"]  # a folder written before matte detectors existed
    (folder / "config.json").write_text(json.dumps(record))
    detector = load_detector_folder(folder, device="cpu")
    assert detector.config.outputs == "mask"
    with pytest.raises(DetectorError, match="--outputs matte"):
        detector.predict_matte(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(DetectorError, match="outputs must be one of"):
        replace(MATTE, outputs="depth").validate()  # type: ignore[arg-type]


class PixelMatte(Detector):
    """A matte detector whose maps follow the pixels: probability = bright, alpha = red / 255, W = RGB / 255."""

    def __init__(self) -> None:
        super().__init__(build_network(MATTE), MATTE, version="pixels", device="cpu")
        self.batches: list[tuple[int, ...]] = []

    def predict_maps(self, batch: np.ndarray, **_: object) -> np.ndarray:
        self.batches.append(batch.shape)
        rgb = batch.astype(np.float32) / 255.0
        return np.concatenate([(rgb[..., :1] > 0.5).astype(np.float32), rgb[..., :1], rgb], axis=-1)


def _marked(height: int, width: int) -> np.ndarray:
    rgb = np.full((height, width, 3), 40, np.uint8)
    rgb[height // 4 : height // 2, width // 4 : 3 * width // 4] = (230, 120, 10)
    return rgb


@pytest.mark.parametrize(
    ("options", "batches"),
    [
        (DetectionOptions(dilate_px=0, detect_side=None, tile_above=150, tile_side=64, batch_size=8), [(8, 64, 64, 3), (4, 64, 64, 3), (1, 96, 128, 3)]),
        (DetectionOptions(dilate_px=0, detect_side=64, batch_size=8), [(2, 64, 64, 3)]),  # one working shape: one batch
    ],
    ids=["tiled", "working-size"],
)
def test_alpha_and_colour_come_at_full_size_through_tiling_and_resizing(options: DetectionOptions, batches: list[tuple[int, ...]]) -> None:
    detector = PixelMatte()
    images = [_marked(200, 150), _marked(90, 120)]
    detections = detect_images(detector, images, options)
    assert detector.batches == batches
    for rgb, detection in zip(images, detections, strict=True):
        inside = detection.mask > 0
        assert detection.alpha is not None and detection.colour is not None
        assert detection.alpha.shape == rgb.shape[:2] and detection.colour.shape == rgb.shape
        assert detection.alpha.dtype == detection.colour.dtype == np.float32
        assert not detection.alpha[~inside].any()  # 0 outside the footprint
        # Away from the mark's edges (where resizing blends), the maps are the pixels' own values.
        core = np.zeros_like(inside)
        height, width = rgb.shape[:2]
        core[height // 4 + 4 : height // 2 - 4, width // 4 + 4 : 3 * width // 4 - 4] = True
        np.testing.assert_allclose(detection.alpha[core], 230 / 255, atol=0.02)
        np.testing.assert_allclose(detection.colour[core], np.broadcast_to(np.array([230, 120, 10]) / 255, (int(core.sum()), 3)), atol=0.02)
        np.testing.assert_allclose(detection.colour[0, 0], np.full(3, 40 / 255), atol=0.02)


def test_a_mask_detector_detection_has_no_matte() -> None:
    torch.manual_seed(0)
    config = replace(MATTE, outputs="mask")
    detection = detect_images(Detector(build_network(config), config, "mask", device="cpu"), [_marked(64, 64)], DetectionOptions())[0]
    assert detection.alpha is None and detection.colour is None
