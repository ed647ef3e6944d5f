"""Detector inference on whole images: working size, tiling, batching, full-resolution masks and mattes.

Removal, drift references, evaluation, threshold calibration and the benchmarks all
detect through this module, so each sees what the others see.

A detector finds watermarks best at the scale its training data showed them.  The
detector's ``detect_side`` (``config.json``; ``CLEARMARK_REMOVAL_DETECT_SIDE`` overrides)
records that scale: images are downscaled so that their long side is at most
``detect_side`` (INTER_AREA), and the detector's maps (the probability, and for a matte
detector alpha and the colour W) are upsampled back to the full image, all in one array, so
every output goes through the same resizing, tiling and batching.
Without it (native mode) an image whose long side is at most ``tile_above`` is seen at its
own resolution, its sides rounded to multiples of 32, and larger images are cut into
overlapping ``tile_side`` tiles at full resolution, so thin marks on huge photos are not
lost.  Images that share a working shape share detector batches.  Probabilities above the
threshold form the mask, which is dilated by ``dilate_px`` so the inpainter also covers
the mark's soft edge.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clearmark.model.detector import OUTPUT_CHANNELS

if TYPE_CHECKING:
    import numpy as np

    from clearmark.model.detector import Detector
    from clearmark.settings import Settings

MULTIPLE = 32
TILE_OVERLAP = 64


@dataclass(frozen=True)
class DetectionOptions:
    """How probabilities become masks (defaults follow the detector and the settings)."""

    threshold: float = 0.5
    dilate_px: int = 3
    detect_side: int | None = None  # None: native resolution
    tile_above: int = 2048
    tile_side: int = 1024
    batch_size: int = 4
    # Detector threads in the removal pipeline; on CPU each runs torch on one thread, because
    # OpenMP threads that spin-wait while decoding and inpainting hold the cores waste them.
    workers: int = 1
    # Masks smaller than this share of the image are speckle, not a watermark.
    min_coverage: float = 1e-4

    @classmethod
    def for_detector(cls, detector: Detector, settings: Settings, *, threshold: float | None = None, batch_size: int | None = None) -> DetectionOptions:
        """Options from the detector's config, overridden by settings and then by arguments."""
        return cls(
            threshold=threshold or settings.removal_threshold or detector.config.threshold,
            dilate_px=settings.removal_dilate_px,
            detect_side=(detector.config.detect_side if settings.removal_detect_side is None else settings.removal_detect_side) or None,
            tile_above=settings.removal_tile_above,
            tile_side=min(settings.removal_tile_above, 1024),
            batch_size=batch_size or settings.removal_batch_size or (2 if detector.device.type == "cpu" else 8),
            workers=detect_workers(detector, settings),
        )


def usable_cores() -> int:
    """The CPU cores this process may use (Linux: its affinity, which containers and taskset narrow)."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def detect_workers(detector: Detector, settings: Settings) -> int:
    """Detector threads of the removal pipeline: ``settings.removal_detect_workers``, by default one
    per usable CPU core on CPU and one on a GPU, which batches instead."""
    return settings.removal_detect_workers or (usable_cores() if detector.device.type == "cpu" else 1)


@dataclass
class Detection:
    """Result for one image, in the upright orientation the detector saw."""

    mask: np.ndarray  # H x W uint8, 0 or 255, full resolution
    coverage: float  # share of mask pixels, 0..1
    confidence: float  # mean probability inside the mask; max probability when nothing was found
    # A matte detector's estimate of the blend J = alpha * W + (1 - alpha) * I (None for a mask detector):
    alpha: np.ndarray | None = None  # H x W float32 0..1, 0 outside the mask
    colour: np.ndarray | None = None  # H x W x 3 float32 0..1, the mark's colour W (RGB)

    @property
    def found(self) -> bool:
        return self.coverage > 0


def predict(detector: Detector, batch: np.ndarray, options: DetectionOptions) -> np.ndarray:
    """``detector.predict_maps`` (N x H x W x C) in chunks of ``options.batch_size``, through the
    inference backend chosen when the detector was loaded (:mod:`clearmark.model.backends`)."""
    return detector.predict_maps(batch, chunk_size=options.batch_size)


def working_shape(height: int, width: int, side: int | None) -> tuple[int, int]:
    """Detector input shape: long side at most ``side`` (``None``: as is), both sides multiples of 32."""
    scale = 1.0 if side is None else min(1.0, side / max(height, width))

    def fit(length: int) -> int:
        return max(MULTIPLE, round(length * scale / MULTIPLE) * MULTIPLE)

    return fit(height), fit(width)


def needs_tiling(height: int, width: int, options: DetectionOptions) -> bool:
    """Only in native mode: with a working size, large images are downscaled like any other."""
    return options.detect_side is None and max(height, width) > options.tile_above


def resize_for_detector(rgb: np.ndarray, options: DetectionOptions) -> np.ndarray:
    """The image at its working shape (INTER_AREA: anti-aliased downscaling)."""
    import cv2

    shape = working_shape(*rgb.shape[:2], options.detect_side)
    if shape == rgb.shape[:2]:
        return rgb
    return cv2.resize(rgb, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def to_image_size(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Working-resolution maps (H' x W' or H' x W' x C) at ``height x width`` (bilinear)."""
    import cv2

    if maps.shape[:2] == (height, width):
        return maps
    resized = cv2.resize(maps, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(height, width, *maps.shape[2:])  # cv2 drops a single channel's axis


def full_size_maps(detector: Detector, rgb: np.ndarray, detect_side: int | None) -> np.ndarray:
    """One image's H x W x C maps (``Detector.predict_maps``), detected at the working size
    ``detect_side`` (None: native) and upsampled, in float32 and the network's default layout.
    Evaluation and threshold calibration score these at the detector's own
    ``config.detect_side``, so the gate measures what removal will do."""
    options = DetectionOptions(detect_side=detect_side)
    maps = detector.predict_maps(resize_for_detector(rgb, options)[None])[0]
    return to_image_size(maps, *rgb.shape[:2])


def full_size_probabilities(detector: Detector, rgb: np.ndarray, detect_side: int | None) -> np.ndarray:
    """One image's H x W probabilities: channel 0 of :func:`full_size_maps`."""
    return full_size_maps(detector, rgb, detect_side)[..., 0]


def probabilities_to_detection(maps: np.ndarray, height: int, width: int, options: DetectionOptions) -> Detection:
    """Upsample working-resolution maps to ``height x width`` and make the mask (and the matte).

    ``maps`` is H' x W' probabilities or a detector's H' x W' x C maps (``predict``); with a
    matte detector's five channels the detection carries alpha (0 outside the mask) and W.
    """
    import cv2
    import numpy as np

    maps = to_image_size(maps, height, width)
    probabilities = maps if maps.ndim == 2 else maps[..., 0]
    hits = probabilities > options.threshold
    found = float(hits.mean()) >= options.min_coverage
    mask = hits.astype(np.uint8) * 255 if found else np.zeros((height, width), np.uint8)
    if found and options.dilate_px > 0:
        size = 2 * options.dilate_px + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    confidence = float(probabilities[hits].mean()) if found else float(probabilities.max())
    alpha = colour = None
    if maps.ndim == 3 and maps.shape[2] == OUTPUT_CHANNELS["matte"]:
        alpha = np.where(mask > 0, maps[..., 1], np.float32(0))
        colour = np.ascontiguousarray(maps[..., 2:5])
    return Detection(mask, float(np.count_nonzero(mask)) / mask.size, confidence, alpha, colour)


def _tile_starts(length: int, tile: int) -> list[int]:
    if length <= tile:
        return [0]
    overlap = min(TILE_OVERLAP, tile // 4)
    count = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def tiles(height: int, width: int, tile: int) -> Iterator[tuple[int, int]]:
    """Top-left corners of overlapping ``tile`` x ``tile`` windows covering the image."""
    for top in _tile_starts(height, tile):
        for left in _tile_starts(width, tile):
            yield top, left


def detect_tiled(detector: Detector, rgb: np.ndarray, options: DetectionOptions) -> np.ndarray:
    """Full-resolution H x W x C maps of a large image (``predict``), averaged where tiles overlap."""
    import numpy as np

    height, width = rgb.shape[:2]
    tile = options.tile_side
    total = np.zeros((height, width, OUTPUT_CHANNELS[detector.config.outputs]), np.float32)
    weight = np.zeros((height, width, 1), np.float32)
    corners = list(tiles(height, width, tile))
    for start in range(0, len(corners), options.batch_size):
        group = corners[start : start + options.batch_size]
        batch = np.stack([rgb[t : t + tile, l : l + tile] for t, l in group])
        for (t, l), maps in zip(group, predict(detector, batch, options), strict=True):
            total[t : t + tile, l : l + tile] += maps
            weight[t : t + tile, l : l + tile] += 1.0
    return total / weight


def detect_images(detector: Detector, images: list[np.ndarray], options: DetectionOptions) -> list[Detection]:
    """Detect watermarks on upright H x W x 3 uint8 images; same-shape images share batches."""
    import numpy as np

    results: list[Detection | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, rgb in enumerate(images):
        height, width = rgb.shape[:2]
        if needs_tiling(height, width, options):
            results[index] = probabilities_to_detection(detect_tiled(detector, rgb, options), height, width, options)
        else:
            groups.setdefault(working_shape(height, width, options.detect_side), []).append(index)
    for members in groups.values():
        for start in range(0, len(members), options.batch_size):
            chunk = members[start : start + options.batch_size]
            batch = np.stack([resize_for_detector(images[i], options) for i in chunk])
            for i, maps in zip(chunk, predict(detector, batch, options), strict=True):
                results[i] = probabilities_to_detection(maps, *images[i].shape[:2], options)
    return [r for r in results if r is not None]
