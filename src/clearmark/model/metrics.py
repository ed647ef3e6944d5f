"""Pixel-level segmentation metrics, the quality label and image fidelity (PSNR, SSIM) against a clean reference."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Lower bounds of each label, best first (issue 3).
QUALITY_LABELS: tuple[tuple[float, str], ...] = ((0.90, "EXCELLENT"), (0.80, "GOOD"), (0.70, "ACCEPTABLE"))
BELOW_LABELS = "NEEDS IMPROVEMENT"
PSNR_CAP_DB = 100.0  # what identical images (infinite PSNR) score, so that means and JSON stay finite


def _ratio(numerator: int, denominator: int) -> float:
    # Nothing to find and nothing found is a perfect score, not a division by zero.
    return 1.0 if denominator == 0 else numerator / denominator


@dataclass
class PixelCounts:
    """Confusion counts over pixels (watermark = positive), summed over any number of images."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def from_masks(cls, predicted: np.ndarray, truth: np.ndarray) -> PixelCounts:
        """Counts of two boolean masks of the same shape."""
        import numpy as np

        if predicted.shape != truth.shape:
            raise ValueError(f"Mask shapes differ: predicted {predicted.shape} vs truth {truth.shape}.")
        predicted, truth = predicted.astype(bool), truth.astype(bool)
        tp = int(np.count_nonzero(predicted & truth))
        fp = int(np.count_nonzero(predicted & ~truth))
        fn = int(np.count_nonzero(~predicted & truth))
        return cls(tp=tp, fp=fp, fn=fn, tn=int(truth.size) - tp - fp - fn)

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def iou(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def dice(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.tp + self.fp + self.fn + self.tn)

    def as_dict(self) -> dict[str, float]:
        """The five aggregate metrics, by name."""
        return {"iou": self.iou, "dice": self.dice, "precision": self.precision, "recall": self.recall, "accuracy": self.accuracy}


def quality_label(iou: float) -> str:
    """EXCELLENT >= 0.90, GOOD >= 0.80, ACCEPTABLE >= 0.70, else NEEDS IMPROVEMENT."""
    for bound, label in QUALITY_LABELS:
        if iou >= bound:
            return label
    return BELOW_LABELS


def distribution(values: list[float]) -> dict[str, float]:
    """Mean, population std, min, max and median of per-image scores."""
    if not values:
        raise ValueError("No per-image values: the evaluated split is empty.")
    return {
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values),
        "min": min(values),
        "max": max(values),
        "median": statistics.median(values),
    }


def psnr(reference: np.ndarray, image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 ``image`` against ``reference``, over the pixels where ``mask`` is True (all without one).

    Identical pixels give :data:`PSNR_CAP_DB` instead of infinity.
    """
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio

    if mask is not None:
        _require_pixels(mask)
        reference, image = reference[mask], image[mask]
    if np.array_equal(reference, image):
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, float(peak_signal_noise_ratio(reference, image, data_range=255)))


SSIM_SIGMA, SSIM_RADIUS = 1.5, 5  # Wang et al.'s Gaussian window: 11 x 11, sigma 1.5 (scikit-image's truncate=3.5)
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim_map(reference: np.ndarray, image: np.ndarray) -> tuple[float, np.ndarray]:
    """SSIM of two H x W x 3 uint8 images: the image's score and the H x W map (channel mean).

    Wang et al. (2004) as scikit-image's ``structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255)`` computes it (the score is the
    map's mean without the window's radius at the border), with OpenCV's Gaussian blur in
    float32: 5-8x faster on a 1024 px image, the same score within 1e-5
    (tests/code/test_bench_quality.py compares them).
    """
    import cv2
    import numpy as np

    x, y = reference.astype(np.float32), image.astype(np.float32)
    side = 2 * SSIM_RADIUS + 1

    def blur(values: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(values, (side, side), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)  # scipy's "reflect"

    mean_x, mean_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mean_x * mean_x, blur(y * y) - mean_y * mean_y
    covariance = blur(x * y) - mean_x * mean_y
    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2
    full = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / ((mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2))
    inner = full[SSIM_RADIUS:-SSIM_RADIUS, SSIM_RADIUS:-SSIM_RADIUS]
    return float(inner.mean(dtype=np.float64)), full.mean(axis=2)


def ssim(reference: np.ndarray, image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM of ``image`` against ``reference``; with ``mask``, the mean of the SSIM map over its True pixels."""
    score, per_pixel = ssim_map(reference, image)
    if mask is None:
        return score
    _require_pixels(mask)
    return float(per_pixel[mask].mean())


def _require_pixels(mask: np.ndarray) -> None:
    if not mask.any():
        raise ValueError("The mask selects no pixels: there is nothing to score inside it.")
