"""Format-preserving decode and encode of JPEG, PNG, WebP, TIFF and BMP images.

Policy (tested in tests/code/test_removal_imageio.py):

* **Orientation**: detection runs on the upright image (EXIF orientation applied); the
  mask is turned back and the image is cleaned and written in its *stored* orientation
  with its EXIF block unchanged, so every viewer shows it exactly as before.
* **Metadata**: ICC profile and EXIF are kept (JPEG, PNG, WebP, 8-bit TIFF); PNG keeps
  every colour and text chunk (``iCCP``, ``sRGB``, ``gAMA``, ``cHRM``, ``pHYs``, text,
  ``eXIf``, ``tIME``) by copying the original chunks.
* **Alpha** is never inpainted: only RGB is cleaned, alpha is written back as it was.
* **Bit depth**: 16-bit PNG and TIFF stay 16-bit; pixels outside the mask keep their
  exact 16-bit values, inpainted pixels are 8-bit values scaled to 16 bits.
* **JPEG** is re-encoded with the original quantisation tables and chroma subsampling,
  i.e. at the original quality.
* Palette images come back as RGB(A) in the same format; grey, bilevel and CMYK images
  come back in their own mode.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clearmark.data.images import IMAGE_SUFFIXES

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# PIL format names we clean; MPO is a multi-picture JPEG (camera files), written as JPEG.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP"})
# PNG ancillary chunks that describe colour, resolution, text or EXIF and stay valid
# after the pixels change (PLTE/tRNS/sBIT depend on the pixel encoding and are not copied).
_PNG_CARRIED = frozenset({b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"pHYs", b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112
# TIFF tags copied to the output: description, make, model, orientation, software,
# date, artist, copyright (the private EXIF sub-IFD of a TIFF is not carried).
_TIFF_CARRIED = (270, 271, 272, 274, 305, 306, 315, 33432)
# Modes whose pixels PIL hands over as 8-bit RGB(A) unchanged.
_DIRECT_MODES = {"RGB": "RGB", "RGBA": "RGBA"}
# Other modes: (mode we work in, mode we write back).
_CONVERTED_MODES = {
    "L": ("RGB", "L"),
    "LA": ("RGBA", "LA"),
    "1": ("RGB", "1"),
    "CMYK": ("RGB", "CMYK"),
    "P": ("RGB", "RGB"),
    "PA": ("RGBA", "RGBA"),
    "RGBX": ("RGB", "RGB"),
    "RGBa": ("RGBA", "RGBA"),
    "La": ("RGBA", "LA"),
    "YCbCr": ("RGB", "RGB"),
}


class ImageDecodeError(ValueError):
    """An image member cannot be decoded or is not allowed; the message says why and what to do."""


def is_image_name(path: str) -> bool:
    """True when the file name has one of the image suffixes the pipeline cleans."""
    dot = path.rfind(".")
    return dot >= 0 and path[dot:].lower() in IMAGE_SUFFIXES


@dataclass
class DecodedImage:
    """Pixels in stored orientation plus everything needed to write the image back."""

    format: str
    mode: str
    pixels: np.ndarray  # H x W x 3|4, uint8 or uint16, stored orientation
    orientation: int
    source: bytes
    info: dict[str, Any] = field(default_factory=dict)
    jpeg_quality: float | None = None

    @property
    def high_bit_depth(self) -> bool:
        return self.pixels.dtype.itemsize == 2

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] == 4

    def rgb8(self) -> np.ndarray:
        """H x W x 3 uint8 RGB in stored orientation (what the inpainter cleans)."""
        import numpy as np

        rgb = self.pixels[:, :, :3]
        return np.ascontiguousarray(rgb >> 8).astype(np.uint8) if self.high_bit_depth else np.ascontiguousarray(rgb)

    def upright_rgb8(self) -> np.ndarray:
        """H x W x 3 uint8 RGB as a viewer shows it (EXIF orientation applied): what the detector sees."""
        import numpy as np

        return np.ascontiguousarray(to_upright(self.rgb8(), self.orientation))


# --- orientation ---------------------------------------------------------------------------
def to_upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an H x W [x C] array, like ``ImageOps.exif_transpose``."""
    import numpy as np

    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return ops[orientation](array) if orientation in ops else array


def from_upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """Inverse of :func:`to_upright`: back to the stored orientation."""
    import numpy as np

    # 6 and 8 are each other's inverse; every other orientation is its own inverse.
    if orientation == 6:
        return np.rot90(array, 1)
    if orientation == 8:
        return np.rot90(array, -1)
    return to_upright(array, orientation)


# --- decode --------------------------------------------------------------------------------
def decode_image(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Decode image bytes; raises :class:`ImageDecodeError` with a reason the report can show."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # PIL's own guard fires on even larger headers
        raise ImageDecodeError(
            f"image is above the {max_pixels / 1e6:.0f} MP limit (CLEARMARK_MAX_IMAGE_PIXELS; {exc})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a readable image (unknown or corrupt header)") from exc
    except Exception as exc:
        raise ImageDecodeError(f"not a readable image ({exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} = {width * height / 1e6:.0f} MP, above the {max_pixels / 1e6:.0f} MP limit "
            "(CLEARMARK_MAX_IMAGE_PIXELS); raise the limit to clean it"
        )
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(f"{image.format} images are not cleaned (supported: JPEG, PNG, WebP, TIFF, BMP)")
    if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
        raise ImageDecodeError(f"animated or multi-page {image.format} images are not cleaned")
    fmt = "JPEG" if image.format == "MPO" else str(image.format)
    try:
        # Read before loading: PIL's TIFF loader applies and then drops the orientation tag.
        orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        orientation = orientation if 1 <= orientation <= 8 else 1
        info = {key: image.info[key] for key in ("icc_profile", "exif", "dpi", "progressive", "progression", "compression") if key in image.info}
        if fmt == "TIFF":  # TIFF keeps EXIF-like fields as tags of its own
            info["tiff_tags"] = {tag: image.tag_v2[tag] for tag in _TIFF_CARRIED if tag in image.tag_v2}
        pixels, mode = _pixels(image, data)
        if fmt == "TIFF" and pixels.dtype.itemsize == 1:
            pixels = from_upright(pixels, orientation)  # PIL handed it over upright; we keep stored pixels
    except ImageDecodeError:
        raise
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageDecodeError(f"corrupt or truncated {image.format} data ({exc})") from exc
    if fmt == "JPEG":
        from PIL import JpegImagePlugin

        info["qtables"] = image.quantization
        info["subsampling"] = JpegImagePlugin.get_sampling(image)
    if fmt == "WEBP":
        info["lossless"] = b"VP8L" in data[:64]
    return DecodedImage(
        format=fmt,
        mode=mode,
        pixels=pixels,
        orientation=orientation,
        source=data,
        info=info,
        jpeg_quality=_jpeg_quality(image),
    )


def _jpeg_quality(image: Image.Image) -> float | None:
    from clearmark.data.features import estimate_jpeg_quality

    if image.format == "MPO":  # same tables; the estimator only accepts the JPEG format name
        image.format = "JPEG"
    return estimate_jpeg_quality(image)


def _bits_per_sample(image: Image.Image, data: bytes) -> int:
    if image.format == "PNG":
        return data[24]  # IHDR bit depth: signature (8) + length (4) + type (4) + width (4) + height (4)
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, (8,))  # BitsPerSample
        return int(bits[0] if isinstance(bits, tuple) else bits)
    return 8


def _pixels(image: Image.Image, data: bytes) -> tuple[np.ndarray, str]:
    """(H x W x 3|4 array in stored orientation, original mode)."""
    import numpy as np

    mode = image.mode
    if _bits_per_sample(image, data) == 16:
        return _pixels16(data), mode
    image.load()
    if mode in _DIRECT_MODES:
        return np.asarray(image), mode
    if mode == "P" and "transparency" in image.info:
        mode = "PA"
    if mode not in _CONVERTED_MODES:
        raise ImageDecodeError(f"pixel mode {image.mode} is not supported; convert the image to 8-bit RGB or 16-bit RGB")
    work, _ = _CONVERTED_MODES[mode]
    return np.asarray(image.convert(work)), mode


def _pixels16(data: bytes) -> np.ndarray:
    """16-bit PNG/TIFF through OpenCV (PIL has no 16-bit RGB mode); grey becomes 3 equal channels."""
    import cv2
    import numpy as np

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16:
        raise ImageDecodeError("16-bit image could not be decoded (corrupt data or an unusual layout)")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    if array.shape[2] == 2:  # grey + alpha
        return np.dstack([array[:, :, 0]] * 3 + [array[:, :, 1]])
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


# --- encode --------------------------------------------------------------------------------
def merge_cleaned(image: DecodedImage, cleaned_rgb8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pixels to write: the original everywhere except inside ``mask``, alpha untouched.

    ``cleaned_rgb8`` is the inpainter's H x W x 3 uint8 output in stored orientation and
    ``mask`` the H x W uint8 (0/255) mask it used.
    """
    import numpy as np

    out = image.pixels.copy()
    inside = mask > 0
    values = cleaned_rgb8[inside].astype(out.dtype)
    if image.high_bit_depth:
        values = values * np.uint16(257)  # 0..255 -> 0..65535
    out[:, :, :3][inside] = values
    return out


def encode_image(image: DecodedImage, pixels: np.ndarray) -> bytes:
    """Encode ``pixels`` (same shape and dtype as ``image.pixels``) in the original format."""
    if image.high_bit_depth:
        return _encode16(image, pixels)
    from PIL import Image

    work = "RGBA" if pixels.shape[2] == 4 else "RGB"
    target = _DIRECT_MODES.get(image.mode) or _CONVERTED_MODES[image.mode][1]
    picture = Image.fromarray(pixels, work)
    if target != work:
        picture = picture.convert(target)
    buffer = io.BytesIO()
    info = image.info
    keep = {k: info[k] for k in ("icc_profile", "exif", "dpi") if info.get(k)}
    if image.format == "JPEG":
        picture.save(
            buffer, "JPEG", qtables=info["qtables"], subsampling=max(info["subsampling"], 0),
            progressive=bool(info.get("progressive") or info.get("progression")), **keep,
        )  # fmt: skip
    elif image.format == "PNG":
        picture.save(buffer, "PNG", compress_level=6)
        return _with_png_metadata(buffer.getvalue(), image.source)
    elif image.format == "WEBP":
        picture.save(buffer, "WEBP", lossless=info.get("lossless", False), quality=90, exact=True, **keep)
    elif image.format == "TIFF":
        compression = info.get("compression", "raw")
        if compression not in {"raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits"}:
            compression = "tiff_lzw"  # lossless stand-in for codecs PIL cannot write back
        picture.save(buffer, "TIFF", compression=compression, tiffinfo=info.get("tiff_tags", {}), **keep)
    else:
        picture.save(buffer, image.format)
    return buffer.getvalue()


def _encode16(image: DecodedImage, pixels: np.ndarray) -> bytes:
    import cv2
    import numpy as np

    grey = image.mode.startswith("I") or image.mode in {"L", "LA"}
    if grey:
        array = pixels[:, :, 0] if pixels.shape[2] == 3 else np.dstack([pixels[:, :, 0], pixels[:, :, 3]])
    else:
        array = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    if image.format == "PNG":
        ok, encoded = cv2.imencode(".png", array)
        if not ok:
            raise ValueError("OpenCV could not encode the 16-bit PNG")
        return _with_png_metadata(encoded.tobytes(), image.source)
    import tifffile

    buffer = io.BytesIO()
    rgb_order = pixels if not grey else array
    photometric = "minisblack" if grey else "rgb"
    extras = {"extrasamples": ("unassalpha",)} if pixels.shape[2] == 4 and not grey else {}
    orientation = [(274, "H", 1, image.orientation, True)] if image.orientation != 1 else []
    tifffile.imwrite(
        buffer, rgb_order, photometric=photometric, compression="zlib", iccprofile=image.info.get("icc_profile"),
        extratags=orientation, **extras,
    )  # fmt: skip
    return buffer.getvalue()


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, raw chunk bytes) for every chunk of a PNG."""
    if not data.startswith(_PNG_SIGNATURE):
        return []
    chunks, offset = [], len(_PNG_SIGNATURE)
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        end = offset + 12 + length
        chunks.append((kind, data[offset:end]))
        offset = end
        if kind == b"IEND":
            break
    return chunks


def _with_png_metadata(encoded: bytes, original: bytes) -> bytes:
    """``encoded`` with the original's colour/text/EXIF chunks inserted after IHDR."""
    carried = [raw for kind, raw in _png_chunks(original) if kind in _PNG_CARRIED and _crc_ok(raw)]
    carried_kinds = {raw[4:8] for raw in carried}
    out = [_PNG_SIGNATURE]
    for kind, raw in _png_chunks(encoded):
        if kind in carried_kinds:
            continue  # the original's version wins
        out.append(raw)
        if kind == b"IHDR":
            out.extend(carried)
    return b"".join(out)


def _crc_ok(raw: bytes) -> bool:
    return zlib.crc32(raw[4:-4]) == struct.unpack(">I", raw[-4:])[0]
