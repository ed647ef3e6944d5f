"""Before/after crops of the quality benchmark: what the cleaned images look like, in one small PNG."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

COLUMNS = ("watermarked", "cleaned (shipped pipeline)", "clean")
TILE_PX = 200  # side of each tile in the PNG
CROP_SIDES = (128, 384)  # a crop's side in image pixels: marks stay legible, small ones are not lost
LABEL_PX = 18


@dataclass
class CropSample:
    label: str  # one line over the row: the image, its mark and its scores
    watermarked: np.ndarray  # H x W x 3 uint8
    cleaned: np.ndarray
    clean: np.ndarray
    mask: np.ndarray  # H x W bool: the true mark, which the crop is centred on


def crop_box(mask: np.ndarray) -> tuple[int, int, int]:
    """``(top, left, side)`` of a square around the mark: its bounding box with a margin, within :data:`CROP_SIDES`."""
    import numpy as np

    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        top, bottom, left, right = 0, height, 0, width
    else:
        top, bottom, left, right = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    side = int(max(bottom - top, right - left) * 1.2)
    side = min(max(side, CROP_SIDES[0]), CROP_SIDES[1], height, width)
    centre_y, centre_x = (top + bottom) // 2, (left + right) // 2
    return min(max(0, centre_y - side // 2), height - side), min(max(0, centre_x - side // 2), width - side), side


def render_crops(samples: Sequence[CropSample]) -> bytes:
    """One row per sample (label, then watermarked | cleaned | clean around its mark), as PNG bytes."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    row_px = LABEL_PX + TILE_PX
    sheet = Image.new("RGB", (TILE_PX * len(COLUMNS), LABEL_PX + row_px * len(samples)), "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(COLUMNS):
        draw.text((column * TILE_PX + 4, 2), title, fill="black", font=font)
    for row, sample in enumerate(samples):
        top, left, side = crop_box(sample.mask)
        y = LABEL_PX + row * row_px
        draw.text((4, y + 2), sample.label, fill="black", font=font)
        for column, image in enumerate((sample.watermarked, sample.cleaned, sample.clean)):
            tile = Image.fromarray(image[top : top + side, left : left + side]).resize((TILE_PX, TILE_PX), Image.Resampling.LANCZOS)
            sheet.paste(tile, (column * TILE_PX, y + LABEL_PX))
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def save_crops(path: Path, samples: Sequence[CropSample]) -> Path:
    """Write :func:`render_crops` to ``path`` atomically."""
    from clearmark.storage import atomic_write_bytes

    atomic_write_bytes(path, render_crops(samples))
    return path
