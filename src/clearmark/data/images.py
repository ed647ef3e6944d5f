"""Safe image loading: refuse what is broken, normalise the rest to RGB 8-bit.

:func:`load_normalized` is the one entry point curation uses for every raw file.
It checks the file before decoding anything large (empty files, non-images,
decompression bombs from the header's dimensions), then decodes the whole image so
that truncation and corruption surface here rather than in training, and finally
applies the EXIF orientation and converts CMYK, 16-bit, palette, grey and alpha
images to plain RGB (alpha flattened on white).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

# File names every stage treats as images (sources, training folders, removal): what Pillow
# decodes and removal can also write back in the same format (GIF cannot be, so it is not one).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".tif", ".tiff", ".bmp"})
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"})
# Leading bytes of the formats above: such a file that Pillow cannot parse is corrupt, not "not an image".
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
WHITE = (255, 255, 255)
_TRUNCATION_LOCK = threading.Lock()


class ImageRejected(Exception):
    """An input that cannot be used; ``reason`` is a short code, ``detail`` says what to do."""

    REASONS = frozenset({"zero_bytes", "not_image", "corrupt", "truncated", "too_large", "unsupported"})

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}; use one of {sorted(self.REASONS)}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[ImageRejected], tuple[str, str]]:
        """Survive pickling (process pools, Airflow XCom) with both fields."""
        return (type(self), (self.reason, self.detail))


@dataclass(frozen=True)
class ImageInfo:
    """Facts about the original file: size after EXIF orientation, original mode and format."""

    width: int
    height: int
    mode: str
    format: str
    bytes: int


def load_normalized(path: Path, *, max_pixels: int) -> tuple[Image.Image, ImageInfo]:
    """Decode ``path`` fully and return it as an RGB 8-bit image with facts about the original.

    Raises :class:`ImageRejected` for empty, non-image, corrupt, truncated, oversized
    (more than ``max_pixels`` pixels, checked from the header before decoding) or
    unsupported files.
    """
    path = Path(path)
    size_bytes = path.stat().st_size
    if size_bytes == 0:
        raise ImageRejected("zero_bytes", f"{path.name} is empty (0 bytes); the upload or download was probably interrupted: copy the file again.")
    with open(path, "rb") as fh:
        head = fh.read(16)

    image = _open(path, head, max_pixels)
    with image:
        file_format = image.format or "unknown"
        if file_format not in SUPPORTED_FORMATS:
            raise ImageRejected("unsupported", f"{path.name} is a {file_format} file; convert it to one of {', '.join(sorted(SUPPORTED_FORMATS))}.")
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                "too_large",
                f"{path.name} is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
                "(CLEARMARK_MAX_IMAGE_PIXELS); resize it or raise the limit if the file is trusted.",
            )
        original_mode = image.mode
        _decode_fully(image, path)
        rgb = _to_rgb(_apply_orientation(image), path)
    info = ImageInfo(width=rgb.width, height=rgb.height, mode=original_mode, format=file_format, bytes=size_bytes)
    return rgb, info


def _open(path: Path, head: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only (Pillow decodes lazily); classify what cannot be parsed."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow warns (DecompressionBombWarning) above its own limit; the caller checks ``max_pixels``.
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_large", f"{path.name}: {exc} Resize it below {max_pixels:,} pixels before uploading.") from exc
    except UnidentifiedImageError as exc:
        if head.startswith(IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
            raise ImageRejected("corrupt", f"{path.name} starts like an image but its header cannot be read; re-export or re-download it.") from exc
        raise ImageRejected(
            "not_image", f"{path.name} is not an image file (supported: {', '.join(sorted(SUPPORTED_FORMATS))}); remove it from the source."
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("corrupt", f"{path.name} has a damaged header ({exc}); re-export or re-download it.") from exc


@contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make Pillow raise on truncated data even if some code set ``LOAD_TRUNCATED_IMAGES``."""
    from PIL import ImageFile

    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _TRUNCATION_LOCK:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def _decode_fully(image: Image.Image, path: Path) -> None:
    with _strict_truncation():
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            message = str(exc)
            if "truncated" in message.lower() or isinstance(exc, EOFError):
                raise ImageRejected("truncated", f"{path.name} is cut short ({message}); copy or download the complete file again.") from exc
            raise ImageRejected("corrupt", f"{path.name} cannot be decoded ({message}); re-export or re-download it.") from exc


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag says (a broken EXIF block leaves the image as is)."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, OSError, KeyError, TypeError):
        return image


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """Convert any supported mode to RGB 8-bit; transparent pixels become white."""
    import numpy as np
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I: 16-bit samples (PNG/TIFF) scaled to 8 bits
        samples = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(samples / 257.0), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        raise ImageRejected("unsupported", f"{path.name} holds floating-point samples; export it as an 8- or 16-bit PNG or TIFF.")
    if mode == "P" and "transparency" in image.info or mode in {"PA", "LA", "La", "RGBA", "RGBa"}:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*WHITE, 255)), rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageRejected("unsupported", f"{path.name} uses colour mode {mode}, which cannot be converted to RGB; export it as RGB.") from exc


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """Use the embedded ICC profile when there is one (accurate colours), else Pillow's formula."""
    import io

    from PIL import ImageCms as cms

    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = cms.ImageCmsProfile(io.BytesIO(profile))
            converted = cms.profileToProfile(image, source, cms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:
                return converted
        except (OSError, ValueError, cms.PyCMSError):
            pass  # a broken profile: fall back to the plain conversion
    return image.convert("RGB")
