"""Quality on watermarks the detector never saw: mask accuracy and removal fidelity.

:func:`measure_quality` generates a held-out synthetic set
(``generate_synthetic(..., styles="heldout")``: fonts, logo shapes and opacities that the
training styles never use) and measures

* **mask**: IoU, Dice, precision and recall of the detector, aggregated over all pixels
  (:class:`clearmark.model.metrics.PixelCounts`), on masks made by the removal
  pipeline's own detection path at the detector's threshold, undilated;
* **removal**: PSNR and SSIM of each method's output against the clean image, over the
  whole image and inside the true watermark mask only, averaged over images:

  - ``nothing``: the watermarked image as it is (the floor);
  - ``<inpainter>_true_mask``: the true mask, dilated as production dilates, then
    inpainted (the ceiling of mask-then-inpaint with that inpainter);
  - ``<inpainter>_predicted_mask``: what production does (detect, dilate, inpaint);
  - ``diffusers_predicted_mask``: Stable Diffusion on the predicted mask, only where a
    GPU is present (``diffusers=True``).

PSNR and SSIM are :func:`clearmark.model.metrics.psnr` and
:func:`clearmark.model.metrics.ssim_map` (identical pixels score
:data:`~clearmark.model.metrics.PSNR_CAP_DB`); the in-mask SSIM is the mean of the SSIM map
over the mask's pixels.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from clearmark.model.detector import Detector
    from clearmark.settings import Settings

CHUNK = 8  # images loaded, detected and inpainted together
DIFFUSERS_SKIPPED = "no GPU: diffusers inpainting is only benchmarked where a GPU is present"
# The GPU profile asks for diffusers; a machine without the (multi-GB, never downloaded)
# model still gets every other figure, and the table says why this one is missing.
DIFFUSERS_MODEL_MISSING = (
    "no local Stable Diffusion inpainting model: set CLEARMARK_DIFFUSERS_MODEL_DIR "
    "(`clearmark remove --inpainter diffusers` says how to get one)"
)


def measure_quality(
    detector: Detector,
    work: Path,
    *,
    images: int = 100,
    size: int = 512,
    seed: int = 4242,
    inpainters: Sequence[str] = ("telea",),
    diffusers: bool = False,
    progress: bool = True,
    settings: Settings,
) -> dict[str, Any]:
    """Mask and removal quality of ``detector`` on ``images`` held-out synthetic images of ``size`` px (written under ``work``).

    ``inpainters`` are registry names run on the true and on the predicted mask;
    ``diffusers=True`` (where a GPU is present) adds Stable Diffusion on the predicted
    mask.  Detection options and inpainters come from ``settings``, as in production.
    Returns JSON-ready figures rounded to 4 decimals (see the module docstring); each
    removal method has ``seconds``: the wall time to make its images (for predicted
    masks, production detection included).
    """
    import numpy as np

    from clearmark.data.synth import HELDOUT_STYLES, generate_synthetic
    from clearmark.model.inference import (
        DetectionOptions,
        detect_images,
        probabilities_to_detection,
    )
    from clearmark.model.metrics import PixelCounts
    from clearmark.progress import progress_bar
    from clearmark.removal.inpaint import DiffusersModelNotFoundError, get_inpainter, inpaint_images

    if "diffusers" in inpainters:
        raise ValueError(
            "Pass diffusers=True to benchmark the diffusers inpainter (it runs on the predicted mask, where a GPU is present)."
        )
    built = {name: get_inpainter(name, settings) for name in inpainters}  # unknown names and missing models fail here
    diffuser, diffusers_skipped = None, DIFFUSERS_SKIPPED
    if diffusers:
        try:
            diffuser = get_inpainter("diffusers", settings)
        except DiffusersModelNotFoundError:
            diffusers_skipped = DIFFUSERS_MODEL_MISSING
    production = DetectionOptions.for_detector(detector, settings)
    undilated = dataclasses.replace(production, threshold=detector.config.threshold, dilate_px=0)

    summary = generate_synthetic(work / "heldout", images, seed, size=size, styles="heldout", progress=progress)
    counts = PixelCounts()
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, float] = defaultdict(float)
    names = summary.names
    with progress_bar(total=len(names), desc="quality (held-out set)", unit="img", disable=not progress) as bar:
        for start in range(0, len(names), CHUNK):
            clean, watermarked, truth = _load(summary.out_dir, names[start : start + CHUNK])
            for detection, true_mask in zip(detect_images(detector, watermarked, undilated), truth, strict=True):
                counts += PixelCounts.from_masks(detection.mask > 0, true_mask)

            started = time.perf_counter()
            predicted = [d.mask for d in detect_images(detector, watermarked, production)]
            detect_seconds = time.perf_counter() - started
            # The true mask as a certain probability map: production's own threshold, dilation and speckle rule.
            true_dilated = [probabilities_to_detection(t.astype(np.float32), *t.shape, production).mask for t in truth]

            outputs = {"nothing": watermarked}
            runs = [(f"{name}_true_mask", inpainter, true_dilated, 0.0) for name, inpainter in built.items()]
            runs += [(f"{name}_predicted_mask", inpainter, predicted, detect_seconds) for name, inpainter in built.items()]
            if diffuser is not None:
                runs.append(("diffusers_predicted_mask", diffuser, predicted, detect_seconds))
            for method, inpainter, masks, spent in runs:
                started = time.perf_counter()
                outputs[method] = inpaint_images(inpainter, watermarked, masks)
                seconds[method] += spent + time.perf_counter() - started

            for method, results in outputs.items():
                for reference, result, true_mask in zip(clean, results, truth, strict=True):
                    _score(scores[method], reference, result, true_mask)
            bar.update(len(clean))

    removal: dict[str, Any] = {method: {**_means(values), "seconds": round(seconds[method], 4)} for method, values in scores.items()}
    if diffuser is None:
        removal["diffusers_predicted_mask"] = {"skipped": diffusers_skipped}
    return {
        "held_out_set": {
            "images": summary.count,
            "size": size,
            "seed": seed,
            "styles": HELDOUT_STYLES.describe(),
            "kinds": summary.kinds(),
        },
        "detector": {"version": detector.version, "architecture": f"{detector.config.architecture}/{detector.config.encoder}"},
        "detection": {
            "mask_threshold": undilated.threshold,
            "inpainting_threshold": production.threshold,
            "inpainting_dilate_px": production.dilate_px,
        },
        "mask": {name: round(value, 4) for name, value in counts.as_dict().items() if name != "accuracy"},
        "removal": removal,
    }


def _load(folder: Path, names: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Clean and watermarked RGB arrays and boolean true masks of ``names``."""
    import numpy as np
    from PIL import Image

    def read(part: str, name: str) -> np.ndarray:
        with Image.open(folder / part / name) as image:
            return np.asarray(image)

    return (
        [read("clean", name) for name in names],
        [read("watermarked", name) for name in names],
        [read("masks", name) > 0 for name in names],
    )


def _score(into: dict[str, list[float]], clean: np.ndarray, result: np.ndarray, true_mask: np.ndarray) -> None:
    """Append one image's four scores (in-mask ones only when it has a watermark)."""
    from clearmark.model.metrics import psnr, ssim_map

    score, per_pixel = ssim_map(clean, result)
    into["psnr_db"].append(psnr(clean, result))
    into["ssim"].append(score)
    if true_mask.any():
        into["psnr_in_mask_db"].append(psnr(clean, result, true_mask))
        into["ssim_in_mask"].append(float(per_pixel[true_mask].mean()))


def _means(values: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.fmean(scores), 4) for name, scores in values.items()}
