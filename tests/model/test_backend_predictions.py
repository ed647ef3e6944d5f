"""Every inference backend this machine has finds the bundled baseline's masks on real held-out photos as
torch float32 does.

Tolerances against the detector's own network in float32 (``torch-eager``), over 12 photo-style images
(held-out photographs, fonts and marks; 512 px; JPEG q88-98), with removal's detection options:

* float32 backends (``openvino``, ``torch-cpu-f32``): probabilities within 1e-4 and mask IoU >= 0.999;
* reduced precision (``torch-cpu-bf16``, ``torch-cuda-fp16``): probabilities within 0.25 and mask IoU
  >= 0.98 (masks change only where the probability sits near the threshold; bf16 measured 0.14 and 0.992);
* int8 (``openvino-int8``): mask IoU against the true marks within 0.01 of float32's (issue 16's
  bound; measured 0.3507 against 0.3503), and IoU >= 0.9 against float32's masks (measured 0.965).

A backend this machine lacks is skipped with the backend's own reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clearmark.model.backends import available_backends, backend_status
from clearmark.model.inference import DetectionOptions, detect_images, predict, resize_for_detector
from clearmark.model.loading import load_detector
from clearmark.settings import REPO_ROOT, Settings

BASELINE = REPO_ROOT / "models" / "baseline"
REDUCED_PRECISION = ("torch-cpu-bf16", "torch-cuda-fp16")
INT8 = ("openvino-int8",)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """12 held-out photos and their true marks."""
    from PIL import Image

    from clearmark.data.synth import generate_synthetic

    summary = generate_synthetic(tmp_path_factory.mktemp("heldout"), 12, seed=16, size=512, styles="photo-heldout", jpeg_quality=(88, 98))
    photos = [np.asarray(Image.open(summary.out_dir / "watermarked" / item.name).convert("RGB")) for item in summary.items]
    return photos, [np.asarray(Image.open(summary.out_dir / "masks" / item.name).convert("L")) > 127 for item in summary.items]


def pooled_iou(masks: list[np.ndarray], others: list[np.ndarray]) -> float:
    """IoU of the masks' pixels (> 0) over all images."""
    both = sum(int(np.count_nonzero((a > 0) & (b > 0))) for a, b in zip(masks, others, strict=True))
    either = sum(int(np.count_nonzero((a > 0) | (b > 0))) for a, b in zip(masks, others, strict=True))
    assert either > 0  # the photos carry marks the baseline finds
    return both / either


@pytest.fixture(scope="module")
def float32(held_out: tuple[list[np.ndarray], list[np.ndarray]], tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The float32 reference: working-size probabilities and the final masks."""
    photos = held_out[0]
    settings = Settings(home=tmp_path_factory.mktemp("home"))
    detector = load_detector(BASELINE, settings, device="cpu")
    options = DetectionOptions.for_detector(detector, settings)
    maps = [predict(detector, resize_for_detector(rgb, options)[None], options)[0] for rgb in photos]
    return maps, [d.mask for d in detect_images(detector, photos, options)]


@pytest.mark.parametrize("name", available_backends())
def test_backend_masks_match_float32_on_held_out_photos(name: str, held_out, float32, tmp_path: Path) -> None:
    if why := backend_status()[name]:
        pytest.skip(f"{name}: {why}")
    settings = Settings(home=tmp_path)
    detector = load_detector(BASELINE, settings, backend=name)
    assert detector.backend_name == name
    options = DetectionOptions.for_detector(detector, settings)
    photos, truth = held_out
    maps = [predict(detector, resize_for_detector(rgb, options)[None], options)[0] for rgb in photos]
    masks = [d.mask for d in detect_images(detector, photos, options)]
    exact_maps, exact_masks = float32
    iou = pooled_iou(masks, exact_masks)
    if name in INT8:
        assert abs(pooled_iou(masks, truth) - pooled_iou(exact_masks, truth)) <= 0.01
        assert iou >= 0.9, f"{name}: mask IoU {iou:.4f} against float32"
        return
    difference = max(float(np.abs(a - b).max()) for a, b in zip(maps, exact_maps, strict=True))
    reduced = name in REDUCED_PRECISION
    assert difference <= (0.25 if reduced else 1e-4), f"{name}: max probability difference {difference:.2e}"
    assert iou >= (0.98 if reduced else 0.999), f"{name}: mask IoU {iou:.4f} against float32"
