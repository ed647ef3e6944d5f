"""The restorer: invert the watermark's blend where it can, inpaint only where it must.

A visible mark is blended as ``J = a*W + (1 - a)*I`` (``a`` the matte, ``W`` the mark's
colour layer, ``I`` the photo), so under a semi-transparent mark the photo is still
there: :func:`unblend` recovers it as ``I = (J - a*W) / (1 - a)``.  Where the mark is
(nearly) opaque, or the inversion leaves the valid colour range (the matte is wrong
there), the pixels are inpainted instead.  Inverting multiplies the JPEG noise by the
gain ``1 / (1 - a)``; the unblended pixels are denoised in proportion to it.

The matte comes from the detector (``Detection.alpha`` and ``Detection.colour``).  For a
detector that predicts only a mask the footprint is inpainted, unless ``fit_matte``
is on: :func:`estimate_matte` then fits the matte from the image (on the photo-train
validation images it scored below plain Telea on the predicted mask, so it is off by
default; docs/architecture.md, "Inpainters", has the figures).

This module is reachable from the CLI and DAG files, so numpy and OpenCV are imported
inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from clearmark.removal.inpaint import (
    Inpainter,
    MaskOnly,
    MatteDetection,
    OpenCVInpainter,
    Restorer,
    RestoreStats,
    box_window,
    get_inpainter,
    mask_box,
    masked_pixels,
    register_inpainter,
)
from clearmark.settings import Settings

if TYPE_CHECKING:
    import numpy as np

RESTORER = "restore"
# Chosen on photo-train validation images (docs/architecture.md, "Inpainters"): 0.80-0.88
# score alike, higher limits lose (the noise gain 1/(1-a) passes 8x), so the middle.
DEFAULT_ALPHA_LIMIT = 0.85
# How far (grey levels) an inverted pixel may leave 0..255 before the matte counts as
# wrong there: JPEG noise times the gain overshoots a little even with an exact matte.
SATURATION_MARGIN = 24.0
Denoiser = Literal["nlm", "bilateral", "none"]
# Non-local means in CIELAB, lightness and the two colour channels apart: strength h, template
# and search window (pixels) of each. Chosen on five photo-train groups (docs/performance.md,
# "One archive, one mark"): +0.07 dB in the mark over OpenCV's colour NLM at h 6 over 15 px,
# in under half of the restorer's time. Colour at half resolution (as 4:2:0 JPEGs keep it)
# cost a third of the time but lost 9 dB on photos with fine colour detail (the gate's
# removal check, tests/integration/test_model_gate.py).
NLM_LIGHTNESS = (10.0, 5, 9)
NLM_COLOUR = (8.0, 5, 7)


def unblend(rgb: np.ndarray, alpha: np.ndarray, colour: np.ndarray, *, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Invert ``J = a*W + (1 - a)*I`` where ``0 < alpha < limit``.

    ``rgb`` H x W x 3 uint8 (``J``), ``alpha`` H x W float32 in 0..1, ``colour`` H x W x 3
    float32 in 0..1 (``W``).  Returns ``(restored, inpaint_mask)``: ``restored`` is uint8,
    equal to ``rgb`` where ``alpha`` is 0 and where the pixel is to be inpainted;
    ``inpaint_mask`` (uint8 0/255) marks the pixels the inversion cannot recover:
    ``alpha >= limit``, or a result more than :data:`SATURATION_MARGIN` outside 0..255.
    """
    import numpy as np

    marked = alpha > 0
    a = np.where(marked, alpha, 0).astype(np.float32)[..., None]
    opaque = marked & (alpha >= limit)
    invertible = (marked & ~opaque)[..., None]
    inverted = (rgb.astype(np.float32) - a * (colour.astype(np.float32) * 255)) / np.where(invertible, 1 - a, 1)
    saturated = invertible[..., 0] & ((inverted < -SATURATION_MARGIN) | (inverted > 255 + SATURATION_MARGIN)).any(axis=2)
    recovered = invertible[..., 0] & ~saturated
    restored = rgb.copy()
    restored[recovered] = np.clip(np.rint(inverted[recovered]), 0, 255).astype(np.uint8)
    return restored, ((opaque | saturated).astype(np.uint8) * 255)


def denoise_unblended(restored: np.ndarray, alpha: np.ndarray, unblended: np.ndarray, *, method: Denoiser) -> np.ndarray:
    """Blend a denoised copy into the ``unblended`` pixels by their noise gain.

    The weight ``1 - 1/gain = alpha``: none where the mark was faint (little noise was
    amplified), most where it was strong.  Only the box around ``unblended`` is filtered.
    Photo-train groups (docs/performance.md): a full weight from ``alpha = 0.5`` on, or a
    filter strength scaled by the gain, won 1 dB in the mark on one group of five and lost
    up to 0.3 dB on others; this weighting stays.
    """
    import numpy as np

    box = mask_box(unblended) if method != "none" else None
    if box is None:
        return restored
    window = box_window(box, 8)  # the filters' reach: the box's edge pixels see real neighbours
    patch = np.ascontiguousarray(restored[window])
    smooth = _denoise(patch, method).astype(np.float32)
    weight = np.where(unblended[window], alpha[window], 0).astype(np.float32)[..., None]
    blended = np.rint(patch + weight * (smooth - patch)).astype(np.uint8)
    result = restored.copy()
    inside = unblended[window]
    result[window][inside] = blended[inside]
    return result


def _denoise(patch: np.ndarray, method: Denoiser) -> np.ndarray:
    import cv2
    import numpy as np

    if method != "nlm":
        return cv2.bilateralFilter(patch, 5, 20, 3)
    lab = cv2.cvtColor(patch, cv2.COLOR_RGB2Lab)
    lightness = cv2.fastNlMeansDenoising(np.ascontiguousarray(lab[..., 0]), None, *NLM_LIGHTNESS)
    colour = cv2.fastNlMeansDenoising(np.ascontiguousarray(lab[..., 1:]), None, *NLM_COLOUR)
    return cv2.cvtColor(np.dstack([lightness, colour]), cv2.COLOR_Lab2RGB)


# --- matte estimate for a mask-only detector --------------------------------------------------
GROUP_PX = 9  # mask pixels this close belong to one mark (glyphs of a line, tiles of a pattern)
# Only pixels this close to the mask's edge are fitted: deeper inside, the fill from the
# surroundings drifts from the photo, and a regressor with errors biases the opacity upwards.
FIT_BAND_PX = 5
MIN_FIT_PIXELS = 40  # a component with fewer changed pixels keeps no fit: it is inpainted
MIN_CHANGE = 0.03  # |J - B| (0..1) above which a pixel counts as changed by the mark
MIN_OPACITY, MAX_RESIDUAL = 0.05, 0.7  # fits weaker than this, or explaining less of J - B, are rejected
COLOUR_SLACK = 0.35  # a fitted W this far outside 0..1 is a bad fit; closer, it is clipped


def estimate_matte(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha, colour)`` of the marks under ``mask`` (bool H x W), from the image alone.

    Per group of nearby mask pixels, one colour ``W`` and one opacity ``a`` are fitted by
    robust least squares of ``J = a*W + (1 - a)*B`` over its changed pixels near the
    mask's edge, ``B`` being the photo as the surroundings predict it (a Telea fill of
    the mask); each pixel's
    alpha is the projection of ``J - B`` on ``W - B``, clipped to ``[0, a]``.  Groups the
    fit does not explain get alpha 1, so the restorer inpaints them.
    """
    import cv2
    import numpy as np

    background = OpenCVInpainter(name="telea", method="telea").inpaint(rgb, mask.astype(np.uint8) * 255).astype(np.float32) / 255
    observed = rgb.astype(np.float32) / 255
    near_edge = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3) <= FIT_BAND_PX
    grouping = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (GROUP_PX, GROUP_PX)))
    count, labels, boxes, _ = cv2.connectedComponentsWithStats(grouping, connectivity=8)
    alpha = np.zeros(mask.shape, np.float32)
    colour = np.zeros((*mask.shape, 3), np.float32)
    for label in range(1, count):
        left, top, width, height = boxes[label, :4]
        box = np.s_[top : top + height, left : left + width]
        pixels = (labels[box] == label) & mask[box]
        seen, photo = observed[box][pixels], background[box][pixels]
        fit = _fit_mark(seen[near_edge[box][pixels]], photo[near_edge[box][pixels]])
        if fit is None:
            alpha[box][pixels] = 1.0
            continue
        opacity, mark_colour = fit
        towards = mark_colour - photo
        along = np.einsum("ij,ij->i", seen - photo, towards) / np.maximum(np.einsum("ij,ij->i", towards, towards), 1e-4)
        alpha[box][pixels] = np.clip(along, 0, opacity)
        colour[box][pixels] = mark_colour
    return alpha, colour


def _fit_mark(observed: np.ndarray, background: np.ndarray) -> tuple[float, np.ndarray] | None:
    """Robust fit of ``J = c + s*B`` (``c = a*W``, ``s = 1 - a``) over N x 3 pixels; ``(a, W)`` or None."""
    import numpy as np

    changed = np.abs(observed - background).max(axis=1) > MIN_CHANGE
    if changed.sum() < MIN_FIT_PIXELS:
        return None
    j, b = observed[changed], background[changed]
    # Rows: one per pixel and channel; columns: c_r, c_g, c_b, s.
    design = np.zeros((j.size, 4), np.float64)
    design[np.arange(j.size), np.tile(np.arange(3), len(j))] = 1.0
    design[:, 3] = b.reshape(-1)
    target = j.reshape(-1).astype(np.float64)
    weights = np.ones_like(target)
    for _ in range(5):  # iteratively reweighted least squares, Huber weights
        root = np.sqrt(weights)
        solution = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)[0]
        residual = target - design @ solution
        scale = 1.4826 * np.median(np.abs(residual)) + 1e-6
        weights = np.minimum(1.0, 1.345 * scale / np.maximum(np.abs(residual), 1e-12))
    opacity = 1.0 - float(solution[3])
    explained = float(np.sqrt(np.mean(residual**2)) / (np.sqrt(np.mean((j - b) ** 2)) + 1e-6))
    if not MIN_OPACITY <= opacity <= 1 - MIN_OPACITY or explained > MAX_RESIDUAL:
        return None
    mark_colour = solution[:3] / opacity
    if (mark_colour < -COLOUR_SLACK).any() or (mark_colour > 1 + COLOUR_SLACK).any():
        return None
    return opacity, np.clip(mark_colour, 0, 1).astype(np.float32)


# --- the registered restorer ------------------------------------------------------------------
@dataclass(frozen=True)
class UnblendRestorer:
    """Unblend where ``alpha < limit``, denoise by the gain, inpaint the rest with ``inner``."""

    inner: Inpainter
    limit: float = DEFAULT_ALPHA_LIMIT
    denoise: Denoiser = "nlm"
    fit_matte: bool = False  # fit a matte where the detector gives only a mask (else inpaint it)
    name: str = RESTORER
    uses_matte: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0 < self.limit <= 1:
            raise ValueError(f"The restorer's alpha limit must be in (0, 1], got {self.limit}.")
        if isinstance(self.inner, Restorer):
            raise ValueError(f"The restorer's inner inpainter must be a plain inpainter, not the restorer {self.inner.name!r}.")

    @property
    def thread_safe(self) -> bool:
        return self.inner.thread_safe

    def restore(self, rgb: np.ndarray, detection: MatteDetection) -> tuple[np.ndarray, RestoreStats]:
        """Clean ``rgb`` inside ``detection.mask``; other pixels are returned unchanged."""
        import numpy as np

        footprint = masked_pixels(rgb, detection.mask)
        alpha, colour = detection.alpha, detection.colour
        if alpha is None or colour is None:
            if not self.fit_matte:
                return self.inner.inpaint(rgb, detection.mask), RestoreStats(int(footprint.sum()), 0, int(footprint.sum()))
            alpha, colour = estimate_matte(rgb, footprint)
        alpha = np.where(footprint, alpha, 0).astype(np.float32)
        restored, hole = unblend(rgb, alpha, colour, limit=self.limit)
        unblended = (alpha > 0) & (hole == 0)
        restored = denoise_unblended(restored, alpha, unblended, method=self.denoise)
        if hole.any():
            restored = self.inner.inpaint(restored, hole)
        return restored, RestoreStats(int(footprint.sum()), int(unblended.sum()), int(np.count_nonzero(hole)))

    def inpaint(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Restore from a mask alone (see ``fit_matte``)."""
        return self.restore(rgb, MaskOnly(mask))[0]


@register_inpainter(RESTORER)
def _restore(
    settings: Settings,
    limit: float = DEFAULT_ALPHA_LIMIT,
    inner: str = "telea",
    denoise: Denoiser = "nlm",
    fit_matte: bool = False,
    **inner_options: Any,
) -> UnblendRestorer:
    """Unblend semi-transparent marks, inpaint opaque ones with the inpainter ``inner`` (the default)."""
    inpainter = get_inpainter(inner, settings, **inner_options)
    return UnblendRestorer(inner=inpainter, limit=limit, denoise=denoise, fit_matte=fit_matte)
