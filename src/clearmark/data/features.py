"""Per-image features that drift reports compare between a batch and the training data.

The removal pipeline calls :func:`image_features` for every processed image and the
drift reference is built with the same function over the champion's training images,
so both sides are measured identically.  numpy, cv2 and PIL are imported inside the
functions: this module is reachable from DAG files.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

FEATURE_COLUMNS = [
    "width",
    "height",
    "aspect",
    "brightness",
    "contrast",
    "colourfulness",
    "sharpness",
    "jpeg_quality",
    "mask_coverage",
    "confidence",
]

# Photometric features are measured on a copy whose long side is at most this, so that
# sharpness (which depends on scale) is comparable between image sizes and large
# photos stay cheap.
ANALYSIS_SIDE = 512

# IJG (libjpeg) standard quantisation tables at quality 50 (ITU-T T.81 Annex K).
_IJG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_IJG_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip


def _ijg_table(base: tuple[int, ...], quality: int) -> list[int]:
    """The table libjpeg writes for ``quality`` (``jpeg_quality_scaling`` + baseline clamp)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return [min(max(int((value * scale + 50) // 100), 1), 255) for value in base]


@lru_cache(maxsize=2)
def _sorted_ijg_tables(base: tuple[int, ...]) -> np.ndarray:
    """100 x 64: row ``q - 1`` holds the sorted table libjpeg writes at quality ``q``."""
    import numpy as np

    return np.array([sorted(_ijg_table(base, quality)) for quality in range(1, 101)], dtype=np.int64)


def estimate_jpeg_quality(image: Image.Image) -> float | None:
    """Estimate the IJG quality (1..100) a JPEG was saved with, or ``None`` if not a JPEG.

    Compares the file's quantisation tables with the IJG standard tables scaled to
    every quality and returns the best fit.  Values are compared sorted, which makes
    the match independent of zig-zag versus natural table order (scaling is monotone)
    and exact for files written by libjpeg; other encoders get the closest quality.
    """
    import numpy as np

    tables = getattr(image, "quantization", None)
    if image.format != "JPEG" or not tables:
        return None
    misfit = _squared_error(tables[min(tables)], _IJG_LUMA)
    if len(tables) > 1:
        misfit += _squared_error(tables[sorted(tables)[1]], _IJG_CHROMA)
    return float(np.argmin(misfit) + 1)  # the lowest quality among equal fits, as min() would pick


def _squared_error(table: list[int], base: tuple[int, ...]) -> np.ndarray:
    """Per quality 1..100, the squared distance of ``table`` (sorted) from the scaled IJG table."""
    import numpy as np

    return ((np.sort(np.asarray(table, dtype=np.int64)) - _sorted_ijg_tables(base)) ** 2).sum(axis=1)


def _as_rgb8(rgb: np.ndarray) -> np.ndarray:
    """Validate an image array and return it as H x W x 3 uint8 (alpha dropped, 16-bit scaled)."""
    import numpy as np

    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(
            f"image_features expects an H x W x 3 RGB array (H x W grey or H x W x 4 RGBA also accepted), got shape {rgb.shape}; "
            "decode the image with PIL and convert it with .convert('RGB') first."
        )
    rgb = rgb[:, :, :3]
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    if rgb.dtype == np.uint16:
        return np.ascontiguousarray((rgb >> 8).astype(np.uint8))
    raise ValueError(f"image_features expects uint8 or uint16 pixels, got {rgb.dtype}; convert to uint8 (0..255) first.")


def image_features(rgb: np.ndarray, *, jpeg_quality: float | None, mask_coverage: float, confidence: float) -> dict[str, float]:
    """Features of one image, keyed by :data:`FEATURE_COLUMNS`.

    ``rgb`` is H x W x 3 uint8 (or uint16) at full resolution; ``jpeg_quality`` comes
    from :func:`estimate_jpeg_quality` (``None`` for non-JPEG inputs, stored as NaN);
    ``mask_coverage`` (0..1 share of watermark pixels) and ``confidence`` come from the
    detector.  Brightness and contrast are the mean and standard deviation of BT.601
    luma (0..255), colourfulness is Hasler & Suesstrunk's metric, sharpness the
    variance of the Laplacian, all measured on a copy whose long side is at most
    :data:`ANALYSIS_SIDE` pixels.
    """
    import cv2
    import numpy as np

    pixels = _as_rgb8(rgb)
    height, width = pixels.shape[:2]
    if max(height, width) > ANALYSIS_SIDE:
        factor = ANALYSIS_SIDE / max(height, width)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)

    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    channels = pixels.astype(np.float32)
    red, green, blue = channels[:, :, 0], channels[:, :, 1], channels[:, :, 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    colourfulness = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))

    return {
        "width": float(width),
        "height": float(height),
        "aspect": width / height,
        "brightness": float(grey.mean()),
        "contrast": float(grey.std()),
        "colourfulness": colourfulness,
        "sharpness": float(cv2.Laplacian(grey, cv2.CV_64F).var()),
        "jpeg_quality": math.nan if jpeg_quality is None else float(jpeg_quality),
        "mask_coverage": float(mask_coverage),
        "confidence": float(confidence),
    }
