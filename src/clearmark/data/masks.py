"""Watermark masks (L images, 0 or 255; 255 = watermark) from image pairs or from boxes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

YoloBox = tuple[int, float, float, float, float]  # class, centre x, centre y, width, height (all 0..1 but class)


def mask_from_difference(watermarked: Image.Image, clean: Image.Image, threshold: int, *, min_area: int = 4) -> Image.Image:
    """255 where any channel of the two images differs by more than ``threshold``.

    Connected specks smaller than ``min_area`` pixels (compression noise) are dropped;
    ``min_area=0`` keeps every pixel.
    """
    import cv2
    import numpy as np
    from PIL import Image

    if watermarked.size != clean.size:
        raise ValueError(
            f"watermarked image is {watermarked.size[0]}x{watermarked.size[1]} but its clean image is "
            f"{clean.size[0]}x{clean.size[1]}; a pair must have the same size (check the pairing or resize neither)."
        )
    if not 0 <= threshold < 255:
        raise ValueError(f"threshold must be in 0..254 grey levels (got {threshold}).")
    difference = np.abs(np.asarray(watermarked.convert("RGB"), np.int16) - np.asarray(clean.convert("RGB"), np.int16)).max(axis=2)
    mask = (difference > threshold).astype(np.uint8)
    if min_area > 1 and mask.any():
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_area
        keep[0] = False  # label 0 is the background
        mask = keep[labels].astype(np.uint8)
    return Image.fromarray(mask * 255, "L")


def mask_from_boxes(size: tuple[int, int], boxes_yolo: Iterable[YoloBox]) -> Image.Image:
    """Filled rectangles for YOLO boxes (normalised centre/size) on a ``size`` = (width, height) mask."""
    from PIL import Image, ImageDraw

    width, height = size
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for box in boxes_yolo:
        _, centre_x, centre_y, box_w, box_h = box
        if not (0 <= centre_x <= 1 and 0 <= centre_y <= 1 and 0 < box_w <= 1 and 0 < box_h <= 1):
            raise ValueError(f"YOLO box {box} is not normalised: centre and size must lie in 0..1 (size above 0).")
        left = max(0, round((centre_x - box_w / 2) * width))
        top = max(0, round((centre_y - box_h / 2) * height))
        right = min(width, round((centre_x + box_w / 2) * width))
        bottom = min(height, round((centre_y + box_h / 2) * height))
        if right > left and bottom > top:
            draw.rectangle([left, top, right - 1, bottom - 1], fill=255)
    return mask


def coverage(mask: Image.Image) -> float:
    """Share of the mask's pixels that are watermark (value >= 128)."""
    import numpy as np

    pixels = np.asarray(mask.convert("L"))
    return float((pixels >= 128).mean()) if pixels.size else 0.0
