"""One archive, one watermark: estimate the mark an archive's images share, then remove it.

A stock library or a photographer puts the *same* mark at the same place on many photos.
Such a group gives the mark away (Dekel et al., CVPR 2017, "On the Effectiveness of
Visible Watermarks"): the per-pixel median of the images' gradients keeps the mark's
edges and cancels the photos'.  :func:`estimate_shared_mark` works on a bounded sample
of one group (at least :data:`MIN_IMAGES`, at most :data:`MAX_SAMPLE` images of one frame):

1. **support**: per-pixel median of the grey gradients over the sample; its strong,
   coherent pixels (where the images agree) are the mark's edges, closed and filled into
   its footprint, together with the pixels most of the detector's masks cover;
2. **alignment**: each image's gradient magnitude is phase-correlated with the median's
   (sub-pixel translation, a few scales near 1), and the sample is warped onto it;
3. **joint matte**: with ``u = 1/(1 - a)`` and ``v = a*W/(1 - a)``, the clean photo is
   ``I_k = u*J_k - v``, linear in the unknowns.  One shared ``(u, v)`` per footprint
   pixel is solved over all images at once by iteratively reweighted least squares of
   the photos' gradients ``I_k(p) - I_k(q)`` (neighbours ``p, q``; an L1-like weight,
   since photo gradients are sparse), with ``u = 1, v = 0`` outside the footprint and an
   anchor that keeps each restored pixel's mean and spread over the images at those of
   the photos around the mark (gradients alone prefer a flat photo under the mark);
4. **decision**: the *score* is how much of the gradient the images agree on at the
   mark's edges (:data:`SHARED_SCORE`).  Each image is then checked on its
   own (:func:`mark_residual`).

:meth:`SharedMark.place` fits the estimate to one image (its size and alignment) and
:func:`mark_residual` checks that unblending with it removed the mark's edges; the
pipeline falls back to the per-image restorer where it did not.

Pure numpy, OpenCV and scipy, imported inside functions (this module is reachable from
the CLI).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

MIN_IMAGES = 8  # fewer images of one frame leave the median to the photos: no estimate
MAX_SAMPLE = 64  # images an estimate reads (photo-train group of 60 at 512 px: 32 of them lose 0.7 dB in the mark)
MEDIAN_IMAGES = 31  # of those, the median gradients (the mark's support and template) read at most this many, evenly spread
SAMPLE_BYTES = (
    512 * 1024**2
)  # cap on one group's decoded sample: large frames get fewer images
# Chosen on photo-train groups (192 px, 24 images, seed 5): groups sharing a mark scored
# 0.89-0.98, one of 24 different marks 0.50.
SHARED_SCORE = 0.7
# Levels (per channel): a median gradient above this (and coherent) is a mark edge.  Photo-train
# groups (192 px, 24 images): photos alone reach 3.8 at the 99.9th percentile, the marks' edges 22.
EDGE_LEVEL = 6.0
MIN_EDGE_PIXELS = 40  # fewer edge pixels: nothing is shared
MIN_PART_PX = 10  # a closed piece of the mark's edges has at least this many pixels (photo-train: strays are 1 px)
SEED_SHARE = (
    0.5  # a pixel inside this share of the detector's masks seeds the footprint
)
MARGIN_PX = (
    3  # the footprint reaches this far beyond the mark's edges (soft edges, alignment)
)
# Photo-train group (512 px, 60 images, JPEG q88-98, seed 21): 2 rounds 28.10 dB in the mark, alpha error
# 0.0427; 4 rounds 28.09 dB, 0.0422 (each round is one sparse solve).
IRLS_ROUNDS = 2
ROBUST_DELTA = (
    2.0 / 255
)  # residuals below this count fully: JPEG noise, smooth photo gradients
RING_PX = 12  # the photos' statistics around the footprint, this wide, anchor the solve
ANCHOR = 1.0  # weight (per image) of the across-image mean and spread of the clean photos (photo-train groups: 0.3-3 alike, 0.01 flattens)
SMOOTHNESS = 1e-3  # weight of a smooth-matte prior (per image): keeps flat, saturated pixels solvable
MIN_ALPHA = 1.0 / 255  # estimated alpha below this is noise: the pixel is left alone
SCALES = (
    0.98,
    0.99,
    1.0,
    1.01,
    1.02,
)  # scales tried when aligning an image to the estimate
SEARCH_PX = 6  # how far (pixels) an image's mark may sit from the estimate's place
# A move (shift or scale) must raise the correlation this much over none.  Photo-train group
# (192 px, 24 images): unmoved images chose a move in 7/24 at 0, 3 at 0.02, none from 0.05;
# a 2-3 px shift was found in 23/24 up to 0.1, 18 at 0.2.
ALIGN_GAIN = 0.05
ALIGN_MIN_PX = 0.1  # shifts below this are noise of the phase correlation: not applied
# An image whose unblended result keeps more edge energy along the mark than this share
# of the texture around it (or more than it had before) falls back to per-image restoration.
RESIDUAL_LIMIT = 1.6


@dataclass(frozen=True)
class Alignment:
    """Where a group's mark sits in one image: shift (pixels of the image) and scale."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class Placement:
    """A group's mark fitted to one image: a detection the restorer reads (``MatteDetection``)."""

    mask: np.ndarray  # H x W uint8 0/255: where the mark's alpha is above zero
    alpha: np.ndarray  # H x W float32
    colour: np.ndarray  # H x W x 3 float32
    alignment: Alignment


@dataclass(frozen=True)
class SharedMark:
    """A group's estimated mark in its reference frame (``shape`` = H, W)."""

    group: str
    alpha: np.ndarray  # H x W float32 0..1
    colour: np.ndarray  # H x W x 3 float32 0..1 (W; 0 where alpha is 0)
    box: tuple[
        int, int, int, int
    ]  # (top, bottom, left, right) of the footprint, end-exclusive
    template: (
        np.ndarray
    )  # median gradient magnitude over the box: what images are aligned to

    @property
    def shape(self) -> tuple[int, int]:
        return self.alpha.shape[:2]

    def rgba(self) -> np.ndarray:
        """The mark as an H x W x 4 uint8 image: ``W`` with ``alpha`` (what the user sees removed)."""
        import numpy as np

        rgba = np.concatenate([self.colour, self.alpha[..., None]], axis=2)
        return np.clip(np.rint(rgba * 255), 0, 255).astype(np.uint8)

    def place(self, rgb: np.ndarray) -> Placement:
        """The mark in ``rgb`` (any size of the group's aspect), aligned to it."""
        import cv2
        import numpy as np

        height, width = rgb.shape[:2]
        alpha, premultiplied = self.alpha, self.colour * self.alpha[..., None]
        if (height, width) != self.shape:  # the same mark scaled with the frame
            alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_AREA)
            premultiplied = cv2.resize(
                premultiplied, (width, height), interpolation=cv2.INTER_AREA
            )
        factor = height / self.shape[0]
        top, bottom, left, right = (round(side * factor) for side in self.box)
        template = (
            cv2.resize(self.template, (right - left, bottom - top))
            if factor != 1
            else self.template
        )
        alignment = _align(rgb, template, (top, bottom, left, right))
        if alignment != Alignment():
            matrix = _transform(alignment, ((left + right) / 2, (top + bottom) / 2))
            alpha = cv2.warpAffine(
                alpha, matrix, (width, height), flags=cv2.INTER_LINEAR
            )
            premultiplied = cv2.warpAffine(
                premultiplied, matrix, (width, height), flags=cv2.INTER_LINEAR
            )
        alpha = np.where(alpha >= MIN_ALPHA, alpha, 0).astype(np.float32)
        colour = np.where(
            alpha[..., None] > 0, premultiplied / np.maximum(alpha, 1e-6)[..., None], 0
        ).astype(np.float32)
        return Placement((alpha > 0).astype(np.uint8) * 255, alpha, colour, alignment)


@dataclass(frozen=True)
class GroupEstimate:
    """The outcome of estimating one group: its mark, or why it has none."""

    group: str
    images: int
    score: float
    mark: SharedMark | None
    reason: str = ""  # why no mark is shared ("" when one is)


def frame_group(height: int, width: int) -> str:
    """The group of a frame: images of one aspect ratio (to 1 %) can carry one mark scaled with the frame."""
    return f"aspect-{width / height:.2f}"


def estimate_shared_mark(
    images: Sequence[np.ndarray], seeds: Sequence[np.ndarray | None], *, group: str
) -> GroupEstimate:
    """Estimate the mark ``images`` share (module docstring); ``seeds`` are the detector's masks (bool) or None.

    ``images`` are H x W x 3 uint8 of one reference frame (the caller resizes).
    """
    import numpy as np
    from scipy import ndimage

    if len(images) < MIN_IMAGES:
        return GroupEstimate(
            group,
            len(images),
            0.0,
            None,
            f"{len(images)} images of this frame; a shared mark needs {MIN_IMAGES}",
        )
    stack = np.stack([np.asarray(image, np.uint8) for image in images])
    height, width = stack.shape[1:3]
    coherent, spread = _median_gradients(stack[np.unique(np.linspace(0, len(stack) - 1, min(len(stack), MEDIAN_IMAGES)).round().astype(int))])
    edges = (coherent > EDGE_LEVEL) & (coherent > 0.5 * spread)
    score = _score(coherent, spread, edges)
    if int(edges.sum()) < MIN_EDGE_PIXELS or score < SHARED_SCORE:
        return GroupEstimate(
            group,
            len(images),
            score,
            None,
            f"the images share no mark (score {score:.2f} < {SHARED_SCORE})",
        )
    seeded = [seed for seed in seeds if seed is not None]
    region = edges | (np.mean(seeded, axis=0) >= SEED_SHARE if seeded else False)
    region = ndimage.binary_closing(region, np.ones((7, 7)), border_value=0)
    labels, _ = ndimage.label(region)
    sizes = np.bincount(labels.ravel())
    region = ndimage.binary_fill_holes(
        region & (sizes[labels] >= MIN_PART_PX)
    )  # a few stray pixels where the photos happen to agree are no part of the mark
    footprint = ndimage.binary_dilation(region, np.ones((2 * MARGIN_PX + 1,) * 2))
    rows, cols = (
        np.flatnonzero(footprint.any(axis=1)),
        np.flatnonzero(footprint.any(axis=0)),
    )
    top, bottom = max(0, rows[0] - RING_PX), min(height, rows[-1] + 1 + RING_PX)
    left, right = max(0, cols[0] - RING_PX), min(width, cols[-1] + 1 + RING_PX)
    box = (int(top), int(bottom), int(left), int(right))
    template = coherent[top:bottom, left:right].astype(np.float32)
    crops = _aligned_crops(stack, template, box)
    u, v = _solve_matte(crops, footprint[top:bottom, left:right])
    alpha = np.zeros((height, width), np.float32)
    colour = np.zeros((height, width, 3), np.float32)
    a = np.clip(1 - 1 / np.maximum(u, 1e-3), 0, 0.995)
    a = np.where(footprint[top:bottom, left:right] & (a >= MIN_ALPHA), a, 0)
    premultiplied = v / np.maximum(u, 1e-3)[..., None]
    alpha[top:bottom, left:right] = a
    colour[top:bottom, left:right] = np.where(
        a[..., None] > 0, premultiplied / np.maximum(a, 1e-6)[..., None], 0
    )
    mark = SharedMark(
        group=group,
        alpha=alpha,
        colour=colour.astype(np.float32),
        box=box,
        template=template,
    )
    return GroupEstimate(group, len(images), score, mark)


def mark_residual(rgb: np.ndarray, alpha: np.ndarray) -> float:
    """Gradient energy across the mark's edges in ``rgb``, relative to the texture around the mark.

    About 1 or below when the mark is gone; well above 1 where it, or its inverse
    (an estimate that does not fit), is still there.
    """
    import cv2
    import numpy as np

    grey = _grey(rgb)
    gy, gx = np.gradient(grey)
    ay, ax = np.gradient(alpha)
    edge_strength = np.hypot(ax, ay)
    edges = edge_strength > 0.02
    footprint = alpha > 0
    ring = (
        cv2.dilate(footprint.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
        & ~footprint
    )
    if edges.sum() < MIN_EDGE_PIXELS or ring.sum() < MIN_EDGE_PIXELS:
        return 0.0
    across = (
        np.abs(gx * ax + gy * ay)[edges] / edge_strength[edges]
    )  # the gradient along the mark's edge normal
    texture = (
        float(np.hypot(gx, gy)[ring].mean()) + 1.0
    )  # + 1 level: flat surroundings do not make noise count
    return round(float(across.mean()) / texture, 4)


# --- steps ----------------------------------------------------------------------------------
def _grey(rgb: np.ndarray) -> np.ndarray:
    import cv2
    import numpy as np

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(
        np.float32
    )


def _gradient_magnitude(rgb: np.ndarray) -> np.ndarray:
    """Per pixel, the largest channel's gradient magnitude (as :func:`_median_gradients` measures the mark)."""
    import numpy as np

    gy, gx = np.gradient(np.asarray(rgb, np.float32), axis=(0, 1))
    return np.hypot(gx, gy).max(axis=2)


def _median_gradients(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(|median gradient|, median |gradient|)`` over the K x H x W x 3 ``stack``, the larger channel's.

    Per channel, not grey: a coloured mark can be as bright as the photos' median grey.
    Central differences (as ``np.gradient``) in int16, medians over the images' axis laid
    last (a partition along contiguous memory: several times faster than ``np.median``
    over the first axis).
    """
    import numpy as np

    coherent = np.zeros(stack.shape[1:3], np.float32)
    spread = np.zeros(stack.shape[1:3], np.float32)
    for c in range(stack.shape[3]):
        gx, gy = _central_differences(np.ascontiguousarray(stack[..., c].transpose(1, 2, 0)))
        magnitude = np.hypot(gx, gy, dtype=np.float32)  # before the medians partition gx, gy in place
        np.maximum(coherent, np.hypot(_median_last(gx), _median_last(gy)), out=coherent)
        np.maximum(spread, _median_last(magnitude), out=spread)
    return coherent, spread


def _central_differences(channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.gradient`` along x and y (axes 1 and 0) of the H x W x K uint8 ``channel``, as float32."""
    import numpy as np

    values = channel.astype(np.int16)
    gx, gy = np.empty(values.shape, np.float32), np.empty(values.shape, np.float32)
    for gradient, axis in ((gx, 1), (gy, 0)):
        ahead, behind, inner = ([slice(None)] * 3 for _ in range(3))
        ahead[axis], behind[axis], inner[axis] = slice(2, None), slice(None, -2), slice(1, -1)
        np.subtract(values[tuple(ahead)], values[tuple(behind)], out=gradient[tuple(inner)], dtype=np.float32)
        gradient[tuple(inner)] *= 0.5
        first, second, last, before_last = ([slice(None)] * 3 for _ in range(4))
        first[axis], second[axis], last[axis], before_last[axis] = 0, 1, -1, -2
        gradient[tuple(first)] = values[tuple(second)] - values[tuple(first)]
        gradient[tuple(last)] = values[tuple(last)] - values[tuple(before_last)]
    return gx, gy


def _median_last(values: np.ndarray) -> np.ndarray:
    """Median over the last axis (``values`` is partitioned in place)."""
    count = values.shape[-1]
    middle = sorted({(count - 1) // 2, count // 2})
    values.partition(middle, axis=-1)
    return values[..., middle].mean(axis=-1, dtype="float32")


def _score(coherent: np.ndarray, spread: np.ndarray, edges: np.ndarray) -> float:
    """How far the images agree on their strongest median gradients: 1 = all the same edge, ~0 = none."""
    import numpy as np

    strongest = np.sort(coherent.ravel())[-max(MIN_EDGE_PIXELS, int(edges.sum())) :]
    level = strongest[0]
    chosen = coherent >= level
    return round(
        float(coherent[chosen].sum() / max(float(spread[chosen].sum()), 1e-6)), 4
    )


def _transform(alignment: Alignment, centre: tuple[float, float]) -> np.ndarray:
    """2 x 3 matrix: scale about ``centre``, then shift (reference frame -> image)."""
    import numpy as np

    cx, cy, s = centre[0], centre[1], alignment.scale
    return np.array(
        [[s, 0, cx - s * cx + alignment.dx], [0, s, cy - s * cy + alignment.dy]],
        np.float64,
    )


def _align(rgb: np.ndarray, template: np.ndarray, box: tuple[int, int, int, int]) -> Alignment:
    """The shift (sub-pixel) and scale that best match ``template`` (the reference's box) in ``rgb``.

    Normalised cross-correlation of gradient magnitudes within :data:`SEARCH_PX`; the
    photo's own texture adds the same to every shift, the mark's edges only at the right one.
    Only the window the search reaches is differentiated.
    """
    import cv2
    import numpy as np

    if box[1] - box[0] < 8 or box[3] - box[2] < 8 or template.max() <= 0:
        return Alignment()
    # Room to search around a mark at the frame's edge: no gradient beyond the frame.
    reach = SEARCH_PX + int(np.ceil(max(SCALES) * max(template.shape))) - max(template.shape) + 1
    magnitude, (top, left) = _magnitude_window(rgb, box, reach)
    bottom, right = top + box[1] - box[0], left + box[3] - box[2]
    centre = ((left + right) / 2, (top + bottom) / 2)
    found: dict[float, tuple[float, float, float]] = {}
    for scale in SCALES:
        if scale == 1.0:
            scaled, origin = template, (left, top)
        else:
            size = (
                max(1, round((right - left) * scale)),
                max(1, round((bottom - top) * scale)),
            )
            scaled = cv2.resize(template, size, interpolation=cv2.INTER_LINEAR)
            origin = (round(centre[0] - size[0] / 2), round(centre[1] - size[1] / 2))
        x0, y0 = origin[0] - SEARCH_PX, origin[1] - SEARCH_PX
        x1, y1 = (
            origin[0] + scaled.shape[1] + SEARCH_PX,
            origin[1] + scaled.shape[0] + SEARCH_PX,
        )
        scores = cv2.matchTemplate(magnitude[y0:y1, x0:x1], scaled, cv2.TM_CCORR_NORMED)
        _, peak, _, (px, py) = cv2.minMaxLoc(scores)
        if scale == 1.0:
            unmoved = float(scores[SEARCH_PX, SEARCH_PX])
        found[scale] = (
            px - SEARCH_PX + _subpixel(scores, px, py, axis=1),
            py - SEARCH_PX + _subpixel(scores, px, py, axis=0),
            peak,
        )
    scale = max(found, key=lambda s: found[s][2])
    moved = scale != 1.0 or max(abs(found[scale][0]), abs(found[scale][1])) > 0.5
    if moved and found[scale][2] < unmoved + ALIGN_GAIN:
        return Alignment()  # the photo's texture, not the mark, prefers the move
    dx, dy, _ = found[scale]
    if abs(dx) < ALIGN_MIN_PX and abs(dy) < ALIGN_MIN_PX and scale == 1.0:
        return Alignment()
    return Alignment(round(dx, 3), round(dy, 3), scale)


def _magnitude_window(rgb: np.ndarray, box: tuple[int, int, int, int], reach: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`_gradient_magnitude` of ``rgb`` over ``box`` grown by ``reach`` (zero beyond the frame),
    and where ``box``'s top-left corner lies in it."""
    import numpy as np

    height, width = rgb.shape[:2]
    top, bottom, left, right = box[0] - reach, box[1] + reach, box[2] - reach, box[3] + reach
    # One pixel of context beyond the window: its edge gets the same central differences as the full frame's.
    y0, y1, x0, x1 = max(0, top - 1), min(height, bottom + 1), max(0, left - 1), min(width, right + 1)
    magnitude = _gradient_magnitude(rgb[y0:y1, x0:x1])
    window = np.zeros((bottom - top, right - left), np.float32)
    ys, xs = max(top, 0), max(left, 0)
    ye, xe = min(bottom, height), min(right, width)
    window[ys - top : ye - top, xs - left : xe - left] = magnitude[ys - y0 : ye - y0, xs - x0 : xe - x0]
    return window, (reach, reach)


def _subpixel(scores: np.ndarray, px: int, py: int, *, axis: int) -> float:
    """Offset of the parabola's vertex through the peak and its two neighbours along ``axis``."""
    import numpy as np

    at = (py, px)
    if not 0 < at[axis] < scores.shape[axis] - 1:
        return 0.0
    before = scores[(py - 1, px) if axis == 0 else (py, px - 1)]
    after = scores[(py + 1, px) if axis == 0 else (py, px + 1)]
    curvature = before - 2 * scores[at] + after
    return (
        float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5))
        if curvature < 0
        else 0.0
    )


def _crop_matrix(
    alignment: Alignment, centre: tuple[float, float], left: int, top: int
) -> np.ndarray:
    """Box pixel (x, y) -> image pixel: the reference box under ``alignment`` (for WARP_INVERSE_MAP)."""
    import numpy as np

    matrix = _transform(alignment, centre)
    matrix[:, 2] += matrix[:, :2] @ np.array([left, top], np.float64)
    return matrix


def _aligned_crops(
    stack: np.ndarray, template: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray:
    """The sample's box crops (K x h x w x 3 float32, 0..1), each warped onto the reference."""
    import cv2
    import numpy as np

    top, bottom, left, right = box
    centre = ((left + right) / 2, (top + bottom) / 2)
    crops = np.empty((len(stack), bottom - top, right - left, 3), np.float32)
    for k, image in enumerate(stack):
        alignment = _align(image, template, box)
        if alignment == Alignment():
            crops[k] = image[top:bottom, left:right]
            continue
        matrix = _crop_matrix(alignment, centre, left, top)
        crops[k] = cv2.warpAffine(
            image,
            matrix,
            (right - left, bottom - top),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
    return crops / 255.0


def _solve_matte(crops: np.ndarray, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shared ``u`` (h x w) and ``v`` (h x w x 3) minimising the photos' robust gradient energy.

    Unknowns are the ``free`` pixels' ``u`` and ``v`` (four per pixel); every other pixel
    has ``u = 1, v = 0`` (no mark).  Residual of image ``k``, channel ``c``, neighbours
    ``p, q``: ``u_p J_kp - v_p - u_q J_kq + v_q`` (the clean photo's gradient).
    """
    import numpy as np
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    count, height, width = crops.shape[:3]
    n = height * width
    index = np.arange(n).reshape(height, width)
    pairs = [(index[:, :-1], index[:, 1:]), (index[:-1], index[1:])]
    flat_free = free.ravel()
    p = np.concatenate([a.ravel() for a, _ in pairs])
    q = np.concatenate([b.ravel() for _, b in pairs])
    keep = flat_free[p] | flat_free[q]
    p, q = p[keep], q[keep]
    values = crops.reshape(count, n, 3)
    jp, jq = values[:, p], values[:, q]  # K x E x 3
    u = np.ones(n)
    v = np.zeros((n, 3))
    unknowns = np.concatenate(
        [np.flatnonzero(flat_free) + offset * n for offset in range(4)]
    )
    fixed = np.ones(4 * n, bool)
    fixed[unknowns] = False
    weights = np.ones(jp.shape, np.float32)
    anchor_rows, anchor_cols, anchor_data, anchor_rhs = _anchor(crops, free)
    for _ in range(IRLS_ROUNDS):
        rows, cols, data = [anchor_rows], [anchor_cols], [anchor_data]
        for c in range(3):
            # Sums over the images in float32 (0..1 values, K <= MAX_SAMPLE terms), the system in float64.
            w, a, b = weights[:, :, c], jp[:, :, c], jq[:, :, c]
            wa, wb = w * a, w * b
            sw, sp, sq = (total.astype(np.float64) for total in (w.sum(0), wa.sum(0), wb.sum(0)))
            spp, sqq, spq = (np.einsum("ke,ke->e", x, y).astype(np.float64) for x, y in ((wa, a), (wb, b), (wa, b)))
            sw = sw + SMOOTHNESS * count  # the smooth-matte prior on v: (v_p - v_q)^2
            up, vp, uq, vq = p, (1 + c) * n + p, q, (1 + c) * n + q
            smooth_u = SMOOTHNESS * count / 3
            blocks = [
                (up, up, spp + smooth_u), (up, vp, -sp), (up, uq, -spq - smooth_u), (up, vq, sp),
                (vp, vp, sw), (vp, uq, sq), (vp, vq, -sw),
                (uq, uq, sqq + smooth_u), (uq, vq, -sq), (vq, vq, sw),
            ]  # fmt: skip
            for i, j, value in blocks:
                rows.append(i)
                cols.append(j)
                data.append(value)
                if i is not j:
                    rows.append(j)
                    cols.append(i)
                    data.append(value)
        matrix = sparse.csr_matrix(
            (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
            shape=(4 * n, 4 * n),
        )
        known = np.concatenate([np.ones(n), np.zeros(3 * n)])
        rhs = anchor_rhs[unknowns] - matrix[unknowns][:, fixed] @ known[fixed]
        # Symmetric positive definite: a minimum-degree ordering of A + A^T keeps the factor sparse.
        solution = spsolve(matrix[unknowns][:, unknowns].tocsc(), rhs, permc_spec="MMD_AT_PLUS_A")
        full = known.copy()
        full[unknowns] = solution
        u, v = full[:n], full[n:].reshape(3, n).T
        residual = (
            u[p][None, :, None] * jp
            - v[p][None]
            - u[q][None, :, None] * jq
            + v[q][None]
        )
        weights = (
            1.0 / np.maximum(np.abs(residual), ROBUST_DELTA) * ROBUST_DELTA
        ).astype(np.float32)
    return u.reshape(height, width), v.reshape(height, width, 3)


def _anchor(
    crops: np.ndarray, free: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normal-equation terms that keep each restored pixel's spread and mean over the images
    at those of the photos around the footprint: ``u*std_k(J) = std_ref`` and
    ``u*mean_k(J) - v = mean_ref`` per channel, weighted by :data:`ANCHOR`.

    Gradients alone are happiest with a flat photo under a large mark (``u`` near 0);
    over many photos, a pixel under the mark varies as much as its neighbours do.
    Returns ``(rows, cols, values, rhs)`` over the ``4 * h * w`` unknowns.
    """
    import cv2
    import numpy as np

    count, height, width = crops.shape[:3]
    n = height * width
    mean, spread = crops.mean(axis=0), crops.std(axis=0)
    outside = (~free).astype(np.float32)
    reference_mean, reference_spread = np.empty_like(mean), np.empty_like(spread)
    for reference, observed in ((reference_mean, mean), (reference_spread, spread)):
        filled = np.zeros((height, width), bool)
        for sigma in (
            4,
            8,
            16,
            32,
            64,
            128,
        ):  # reach deeper into the footprint until every pixel has a value
            weight = cv2.GaussianBlur(outside, (0, 0), sigma)
            smooth = (
                cv2.GaussianBlur(observed * outside[..., None], (0, 0), sigma)
                / np.maximum(weight, 1e-6)[..., None]
            )
            take = ~filled & (weight > 1e-3)
            reference[take] = smooth[take]
            filled |= take
        reference[~filled] = (
            observed[outside > 0].mean(axis=0) if outside.any() else observed[~filled]
        )
    weight = ANCHOR * count
    pixel = np.arange(n)
    rows, cols, data = [], [], []
    rhs = np.zeros(4 * n)
    for c in range(3):
        m, s_ = (
            mean[..., c].ravel().astype(np.float64),
            spread[..., c].ravel().astype(np.float64),
        )
        m_ref, s_ref = (
            reference_mean[..., c].ravel().astype(np.float64),
            reference_spread[..., c].ravel().astype(np.float64),
        )
        v = (1 + c) * n + pixel
        rows += [pixel, pixel, v, v]
        cols += [pixel, v, pixel, v]
        data += [weight * (s_**2 + m**2), -weight * m, -weight * m, np.full(n, weight)]
        rhs[pixel] += weight * (s_ * s_ref + m * m_ref)
        rhs[v] -= weight * m_ref
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(data), rhs
