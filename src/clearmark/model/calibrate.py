"""Calibration after training, on data the gate never sees: BatchNorm statistics and the mask threshold.

* :func:`recalibrate_batchnorm` recomputes every BatchNorm layer's running mean and
  variance from un-augmented training images.  Training leaves them tuned to augmented
  crops (colour jitter, noise, blur, JPEG), which the detector never meets in use.
* :func:`calibrate_threshold` picks the mask threshold with the best IoU on the
  validation split.

:func:`calibrate_detector` does both and keeps each change only where validation IoU
does not drop.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from clearmark.model.metrics import PixelCounts

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    import numpy as np

    from clearmark.data.dataset import LocalDataset
    from clearmark.model.detector import Detector

MAX_BATCHNORM_IMAGES = 1024  # enough for stable statistics; more only costs time


# Thresholds tried by calibration; the probabilities are computed once per image.
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.2 + 0.05 * i, 2) for i in range(13))


def calibrate_threshold(
    detector: Detector, pairs: Iterable[tuple[str, np.ndarray, np.ndarray]], *, candidates: tuple[float, ...] = THRESHOLD_GRID, progress: bool = True
) -> dict[str, Any]:
    """The mask threshold with the best aggregate IoU on ``pairs`` (use the validation split, never test).

    Returns ``{"threshold", "iou", "iou_at_current", "by_threshold"}``; ties keep the threshold
    closest to the detector's current one.
    """
    from clearmark.model.inference import full_size_probabilities
    from clearmark.progress import progress_bar

    counts = {t: PixelCounts() for t in candidates}
    seen = 0
    for _, image, mask in progress_bar(pairs, desc="calibrate", unit="img", disable=not progress):
        probabilities = full_size_probabilities(detector, image, detector.config.detect_side)
        for threshold in candidates:
            counts[threshold] += PixelCounts.from_masks(probabilities > threshold, mask)
        seen += 1
    if not seen:
        raise ValueError("Nothing to calibrate on: the split holds no pairs.")
    current = detector.config.threshold
    by_threshold = {t: c.iou for t, c in counts.items()}
    best = max(candidates, key=lambda t: (round(by_threshold[t], 6), -abs(t - current)))
    at_current = by_threshold.get(current)
    return {"threshold": best, "iou": by_threshold[best], "iou_at_current": at_current, "images": seen, "by_threshold": by_threshold}


def recalibrate_batchnorm(detector: Detector, images: Iterable[np.ndarray], *, batch_size: int = 16) -> int:
    """Reset and re-estimate BatchNorm running statistics from ``images`` (H x W x 3 uint8 RGB).

    A cumulative average over batches of same-shape images (no gradients, weights
    unchanged).  Returns the number of images used; 0 when the network has no BatchNorm.
    """
    import numpy as np
    import torch

    norms = [m for m in detector.network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch weighs the same
    pending: dict[tuple[int, ...], list[np.ndarray]] = {}
    seen = 0

    def run(shape: tuple[int, ...]) -> None:
        detector.network(detector.network_input(np.stack(pending.pop(shape))))

    detector.network.train()
    try:
        with torch.no_grad():
            for image in images:
                pending.setdefault(image.shape, []).append(image)
                seen += 1
                if len(pending[image.shape]) == batch_size:
                    run(image.shape)
            for shape in [s for s, batch in pending.items() if len(batch) > 1]:  # BatchNorm needs two samples
                run(shape)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        detector.network.eval()
    return seen


def calibrate_detector(folder: Path, data: LocalDataset, *, progress: bool = True) -> dict[str, Any]:
    """Recalibrate BatchNorm (training split) and the threshold (validation split) of a detector folder.

    Each step is kept only if validation IoU does not drop; the folder is rewritten with
    the result (new weights get a new ``weights_sha256``).  Returns what was measured.
    """
    from clearmark.model.detector import CONFIG_FILE, METRICS_FILE, load_detector_folder, save_detector, update_detector_metrics

    detector = load_detector_folder(folder, device="cpu")
    val_rows = data.split("val")
    # The threshold grid of the weights as trained: the fallback if new BatchNorm statistics do worse.
    as_trained = calibrate_threshold(detector, data.pairs(val_rows), progress=progress)
    before = as_trained["iou_at_current"]
    state = {k: v.clone() for k, v in detector.network.state_dict().items()}
    train_rows = data.split("train").head(MAX_BATCHNORM_IMAGES)
    used = recalibrate_batchnorm(detector, (image for _, image, _ in data.pairs(train_rows)))
    threshold = calibrate_threshold(detector, data.pairs(val_rows), progress=progress) if used else as_trained
    keep_batchnorm = used > 0 and threshold["iou_at_current"] >= before
    if not keep_batchnorm:
        detector.network.load_state_dict(state)
        threshold = as_trained
    result = {
        "val_iou_before": before,
        "batchnorm_images": used if keep_batchnorm else 0,
        "val_iou_after_batchnorm": threshold["iou_at_current"],
        **threshold,
    }
    metrics = {"val_iou_calibrated": threshold["iou"], "calibrated_on": f"{data.version}/train+val", "batchnorm_recalibrated": keep_batchnorm}
    if keep_batchnorm:
        record = json.loads((folder / CONFIG_FILE).read_text())
        save_detector(detector.network, detector.config, folder, metrics=json.loads((folder / METRICS_FILE).read_text()), data_version=record.get("data_version"))
    update_detector_metrics(folder, metrics, threshold=threshold["threshold"])
    return result
