"""A small ``pairs`` source folder with good pairs and every kind of bad input, built on the fly.

Used by the curation unit tests and the ETL integration tests.  Each watermarked image
is its clean image with a white rectangle (``MARK``) on it, so the expected mask is
known exactly.  ``EXPECTED_ACCEPTED`` and ``EXPECTED_REJECTS`` say what curation must do.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 64, 48
MARK = (8, 8, 40, 24)  # left, top, right, bottom (exclusive) of the white watermark
MARK_COVERAGE = (MARK[2] - MARK[0]) * (MARK[3] - MARK[1]) / (WIDTH * HEIGHT)

# id stem -> original mode recorded in the manifest
EXPECTED_NORMALISED = {"cmyk": "CMYK", "grey16": "I;16", "palette": "P", "rgba": "RGBA", "exif_rotated": "RGB"}
# path relative to the source root -> reject reason
EXPECTED_REJECTS = {
    "watermarked/corrupt.png": "corrupt",
    "watermarked/truncated.png": "truncated",
    "watermarked/empty.png": "zero_bytes",
    "watermarked/lonely.png": "unpaired",
    "watermarked/notes.txt": "not_image",
    "watermarked/fake.png": "not_image",
    "watermarked/bomb.png": "too_large",
    "clean/mismatch.png": "size_mismatch",
}


def _clean_rgb(rng: np.random.Generator) -> np.ndarray:
    """Colours kept below 180 so that the white mark differs by far more than the mask threshold."""
    return rng.integers(0, 180, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)


def _marked(array: np.ndarray, value: int = 255) -> np.ndarray:
    marked = array.copy()
    left, top, right, bottom = MARK
    marked[top:bottom, left:right] = value
    return marked


def _save_pair(root: Path, stem: str, clean: Image.Image, watermarked: Image.Image, suffix: str = ".png", **save: object) -> None:
    clean.save(root / "clean" / f"{stem}{suffix}")
    watermarked.save(root / "watermarked" / f"{stem}{suffix}", **save)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grey pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def build_pairs_source(root: Path, good: int = 6, seed: int = 0) -> Path:
    """Write ``good`` plain RGB pairs, the normalisable oddities and the bad inputs under ``root``."""
    rng = np.random.default_rng(seed)
    for folder in ("clean", "watermarked"):
        (root / folder).mkdir(parents=True, exist_ok=True)

    for index in range(good):
        clean = _clean_rgb(rng)
        _save_pair(root, f"good_{index}", Image.fromarray(clean), Image.fromarray(_marked(clean)))

    clean = _clean_rgb(rng)
    _save_pair(root, "cmyk", Image.fromarray(clean).convert("CMYK"), Image.fromarray(_marked(clean)).convert("CMYK"), ".tif")

    grey16 = rng.integers(0, 180, size=(HEIGHT, WIDTH), dtype=np.uint16) * 257
    _save_pair(root, "grey16", Image.fromarray(grey16), Image.fromarray(_marked(grey16, 65535)))

    palette = [int(v) for v in rng.integers(0, 180, size=15 * 3)] + [255, 255, 255]  # entry 15 is white
    indices = rng.integers(0, 15, size=(HEIGHT, WIDTH), dtype=np.uint8)
    palette_image = Image.fromarray(_marked(indices, 15), "P")
    palette_image.putpalette(palette)
    clean_palette = Image.fromarray(indices, "P")
    clean_palette.putpalette(palette)
    _save_pair(root, "palette", clean_palette.convert("RGB"), palette_image)

    clean = _clean_rgb(rng)
    _save_pair(root, "rgba", Image.fromarray(clean), Image.fromarray(_marked(clean)).convert("RGBA"))

    clean = _clean_rgb(rng)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels must be rotated 90 degrees clockwise for display
    stored = Image.fromarray(_marked(clean)).transpose(Image.Transpose.ROTATE_90)
    _save_pair(root, "exif_rotated", Image.fromarray(clean), stored, exif=exif)

    # Bad inputs.
    clean = _clean_rgb(rng)
    Image.fromarray(clean).save(root / "clean" / "corrupt.png")
    (root / "watermarked" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(200))
    Image.fromarray(clean).save(root / "clean" / "truncated.png")
    Image.fromarray(_marked(clean)).save(root / "watermarked" / "full.tmp.png")
    full = (root / "watermarked" / "full.tmp.png").read_bytes()
    (root / "watermarked" / "full.tmp.png").unlink()
    (root / "watermarked" / "truncated.png").write_bytes(full[: len(full) // 2])
    Image.fromarray(clean).save(root / "clean" / "empty.png")
    (root / "watermarked" / "empty.png").write_bytes(b"")
    Image.fromarray(_marked(clean)).save(root / "watermarked" / "lonely.png")
    (root / "watermarked" / "notes.txt").write_text("not an image")
    Image.fromarray(clean).save(root / "clean" / "fake.png")
    (root / "watermarked" / "fake.png").write_text("plain text with an image name")
    Image.fromarray(clean).save(root / "clean" / "bomb.png")
    (root / "watermarked" / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    Image.fromarray(_marked(clean)).save(root / "watermarked" / "mismatch.png")
    Image.fromarray(clean[:, : WIDTH - 4]).save(root / "clean" / "mismatch.png")
    return root


def accepted_stems(good: int = 6) -> list[str]:
    """Stems of every pair that curation must accept (sorted like the manifest's ids)."""
    return sorted([f"good_{index}" for index in range(good)] + list(EXPECTED_NORMALISED))
