"""Quality on photographs and marks the detector never saw: mask accuracy and removal fidelity.

:func:`measure_quality` scores the held-out set of :mod:`clearmark.bench.heldout` (real
photographs, fonts and mark shapes that training never uses, mixed sizes, mostly JPEG) and
measures

* **mask**: IoU, Dice, precision and recall of the detector, aggregated over all pixels
  (:class:`clearmark.model.metrics.PixelCounts`), on masks made by the removal
  pipeline's own detection path (:mod:`clearmark.model.inference`) at the detector's
  threshold, undilated;
* **removal**: PSNR and SSIM of each method's output against the clean image, over the
  whole image and inside the true mark only, averaged over images, and the share of
  images a method made worse than the input (whole-image PSNR below doing nothing):

  - ``nothing``: the watermarked image as it is (the floor);
  - ``<inpainter>_true_mask``: the true mask, dilated as production dilates, then
    inpainted (the ceiling of mask-then-inpaint with that inpainter);
  - ``unblend_true_matte``: the blend inverted with the true alpha and colour layer
    (:func:`clearmark.removal.restore.unblend` at the restorer's default limit), the
    opaque rest inpainted with telea: the ceiling of unblending;
  - ``<inpainter>_predicted_mask``: detect, dilate, inpaint (mask-then-inpaint as the
    pipeline did before the restorer: the baseline the restorer must beat);
  - ``diffusers_predicted_mask``: Stable Diffusion on the predicted mask, only where a
    GPU is present (``diffusers=True``);
  - ``pipeline``: the shipped pipeline, exactly as ``clearmark remove`` runs it
    (:func:`clearmark.removal.runner.run_removal` on the folder of input files: detection,
    the configured restorer, and each image written back in its own format).

PSNR and SSIM are :func:`clearmark.model.metrics.psnr` and
:func:`clearmark.model.metrics.ssim_map` (identical pixels score
:data:`~clearmark.model.metrics.PSNR_CAP_DB`); the in-mask SSIM is the mean of the SSIM map
over the mask's pixels.  With ``crops``, a PNG of watermarked | cleaned | clean crops of
:data:`CROP_SAMPLES` images (from the pipeline's worst to its best) is saved there.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.model.metrics import PixelCounts

if TYPE_CHECKING:
    import numpy as np

    from clearmark.bench.heldout import HeldOutItem, HeldOutSet, HeldOutSpec, Truth
    from clearmark.model.detector import Detector
    from clearmark.model.inference import DetectionOptions
    from clearmark.removal.inpaint import Inpainter
    from clearmark.settings import Settings

CHUNK = 8  # images loaded, detected and inpainted together
CROP_SAMPLES = 6  # images in the before/after PNG
UNBLEND, PIPELINE = "unblend_true_matte", "pipeline"
DIFFUSERS_SKIPPED = "no GPU: diffusers inpainting is only benchmarked where a GPU is present"
# The GPU profile asks for diffusers; a machine without the (multi-GB, never downloaded)
# model still gets every other figure, and the table says why this one is missing.
DIFFUSERS_MODEL_MISSING = (
    "no local Stable Diffusion inpainting model: set CLEARMARK_DIFFUSERS_MODEL_DIR "
    "(`clearmark remove --inpainter diffusers` says how to get one)"
)


def measure_quality(
    settings: Settings,
    model: str,
    work: Path,
    *,
    spec: HeldOutSpec | None = None,
    inpainters: Sequence[str] = ("telea",),
    diffusers: bool = False,
    crops: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Mask and removal quality of the detector ``model`` (a folder or MLflow URI) on the held-out set of ``spec``.

    ``inpainters`` are registry names run on the true and on the predicted mask;
    ``diffusers=True`` (where a GPU is present) adds Stable Diffusion on the predicted
    mask.  Detection options and the pipeline's restorer come from ``settings``, as in
    production; the set is cached under ``<home>/bench/cache`` and the pipeline's outputs
    are written under ``work``.  Returns JSON-ready figures rounded to 4 decimals (see the
    module docstring); each removal method has ``seconds``: the wall time to make its
    images (for predicted masks, production detection included).
    """
    from clearmark.bench.heldout import HeldOutSpec, heldout_set
    from clearmark.model.inference import DetectionOptions
    from clearmark.removal.inpaint import DiffusersModelNotFoundError, get_inpainter
    from clearmark.removal.runner import get_detector

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
    detector = get_detector(settings, model)
    production = DetectionOptions.for_detector(detector, settings)
    undilated = dataclasses.replace(production, threshold=detector.config.threshold, dilate_px=0)

    held = heldout_set(settings.home / "bench" / "cache", spec or HeldOutSpec(), progress=progress)
    pipeline = _run_pipeline(settings, model, held, work / "pipeline", progress)
    # The unblending ceiling inpaints its opaque rest with telea, as the restorer does by default.
    telea = built.get("telea") or get_inpainter("telea", settings)
    scoring = _Scoring(detector, production, undilated, built, telea, diffuser, pipeline)
    scoring.run(held, progress)

    removal = scoring.summary()
    removal["pipeline"].update(pipeline.figures)
    if diffuser is None:
        removal["diffusers_predicted_mask"] = {"skipped": diffusers_skipped}
    figures: dict[str, Any] = {
        "held_out_set": held.describe(),
        "detector": {"version": detector.version, "architecture": f"{detector.config.architecture}/{detector.config.encoder}"},
        "detection": {
            "mask_threshold": undilated.threshold,
            "inpainting_threshold": production.threshold,
            "inpainting_dilate_px": production.dilate_px,
        },
        "mask": {name: round(value, 4) for name, value in scoring.counts.as_dict().items() if name != "accuracy"},
        "removal": removal,
    }
    if crops is not None:
        figures["crops"] = _save_crops(crops, held, pipeline, scoring).name
    return figures


def worse_than_input(scores: Sequence[float], baseline: Sequence[float]) -> float:
    """Share of images whose score is below the baseline's (doing nothing) for the same image; a tie is not worse."""
    if len(scores) != len(baseline) or not scores:
        raise ValueError(f"need one baseline score per image (got {len(scores)} scores and {len(baseline)} baselines).")
    return sum(score < base for score, base in zip(scores, baseline, strict=True)) / len(scores)


@dataclass
class _Pipeline:
    """What ``clearmark remove`` wrote for the held-out inputs."""

    output: Path  # the cleaned folder: one file per input, same name
    figures: dict[str, Any]  # seconds, restorer, statuses and the restorer's pixel shares


def _run_pipeline(settings: Settings, model: str, held: HeldOutSet, output: Path, progress: bool) -> _Pipeline:
    from clearmark.removal.runner import run_removal

    started = time.perf_counter()
    outputs = run_removal(settings, held.inputs, output, model=model, progress=progress)
    seconds = time.perf_counter() - started
    rows = outputs.report.rows
    cleaned = [row for row in rows if row.status == "cleaned"]
    return _Pipeline(
        output,
        {
            "seconds": round(seconds, 4),
            "restorer": outputs.report.inpainter,
            "statuses": dict(Counter(row.status for row in rows)),
            "restorations": outputs.report.restorations,
            # Of each cleaned image's detected footprint, averaged over images.
            "unblended_share": round(statistics.fmean(row.unblended_share or 0.0 for row in cleaned), 4) if cleaned else 0.0,
            "inpainted_share": round(statistics.fmean(row.inpainted_share or 0.0 for row in cleaned), 4) if cleaned else 0.0,
        },
    )


class _Scoring:
    """Every method's output for every image, scored against the clean image."""

    def __init__(
        self, detector: Detector, production: DetectionOptions, undilated: DetectionOptions,
        inpainters: dict[str, Inpainter], telea: Inpainter, diffuser: Inpainter | None, pipeline: _Pipeline,
    ) -> None:  # fmt: skip
        self.detector, self.production, self.undilated = detector, production, undilated
        self.inpainters, self.telea, self.diffuser, self.pipeline = inpainters, telea, diffuser, pipeline
        self.counts = PixelCounts()
        self.names: list[str] = []
        self.scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.seconds: dict[str, float] = defaultdict(float)

    def run(self, held: HeldOutSet, progress: bool) -> None:
        from clearmark.bench.heldout import load_truth
        from clearmark.progress import progress_bar

        with progress_bar(total=len(held.items), desc="quality (held-out set)", unit="img", disable=not progress) as bar:
            for start in range(0, len(held.items), CHUNK):
                items = held.items[start : start + CHUNK]
                truths = [load_truth(held, item) for item in items]
                self._score_chunk(items, truths)
                bar.update(len(items))

    def _score_chunk(self, items: Sequence[HeldOutItem], truths: Sequence[Truth]) -> None:
        import numpy as np

        from clearmark.model.inference import detect_images, probabilities_to_detection
        from clearmark.removal.inpaint import inpaint_images

        watermarked = [truth.watermarked for truth in truths]
        started = time.perf_counter()
        detections = detect_images(self.detector, watermarked, self.undilated)
        if self.production.threshold == self.undilated.threshold:
            # The same hits: production's masks are theirs, dilated (one detection pass instead of two).
            predicted = [probabilities_to_detection((d.mask > 0).astype(np.float32), *d.mask.shape, self.production).mask for d in detections]
        else:
            predicted = [d.mask for d in detect_images(self.detector, watermarked, self.production)]
        detect_seconds = time.perf_counter() - started
        for detection, truth in zip(detections, truths, strict=True):
            self.counts += PixelCounts.from_masks(detection.mask > 0, truth.mask)
        # The true mask as a certain probability map: production's own threshold, dilation and speckle rule.
        true_dilated = [probabilities_to_detection(t.mask.astype(np.float32), *t.mask.shape, self.production).mask for t in truths]

        outputs: dict[str, list[np.ndarray]] = {"nothing": watermarked}
        runs = [(f"{name}_true_mask", inpainter, true_dilated, 0.0) for name, inpainter in self.inpainters.items()]
        runs += [(f"{name}_predicted_mask", inpainter, predicted, detect_seconds) for name, inpainter in self.inpainters.items()]
        if self.diffuser is not None:
            runs.append(("diffusers_predicted_mask", self.diffuser, predicted, detect_seconds))
        for method, inpainter, masks, spent in runs:
            started = time.perf_counter()
            outputs[method] = inpaint_images(inpainter, watermarked, masks)
            self.seconds[method] += spent + time.perf_counter() - started
        started = time.perf_counter()
        outputs[UNBLEND] = [unblend_true_matte(truth, self.telea) for truth in truths]
        self.seconds[UNBLEND] += time.perf_counter() - started
        outputs[PIPELINE] = [read_rgb(self.pipeline.output / item.input) for item in items]

        self.names += [item.name for item in items]
        for method, results in outputs.items():
            for truth, result in zip(truths, results, strict=True):
                _score(self.scores[method], truth.clean, result, truth.mask)

    def summary(self) -> dict[str, Any]:
        """Each method's mean scores, seconds and share of images made worse than the input; the pipeline's worse images by name."""
        nothing = self.scores["nothing"]["psnr_db"]
        removal: dict[str, Any] = {}
        for method, values in self.scores.items():
            removal[method] = {**_means(values), "seconds": round(self.seconds[method], 4)}
            if method != "nothing":
                removal[method]["worse_than_input"] = round(worse_than_input(values["psnr_db"], nothing), 4)
        removal["pipeline"]["worse_images"] = [
            name for name, score, base in zip(self.names, self.scores[PIPELINE]["psnr_db"], nothing, strict=True) if score < base
        ]
        return removal

    def samples(self, count: int) -> list[int]:
        """Indices of ``count`` images spread from the pipeline's smallest to its largest in-mark gain over doing nothing."""
        gains = [
            cleaned - raw for cleaned, raw in zip(self.scores[PIPELINE]["psnr_in_mask_db"], self.scores["nothing"]["psnr_in_mask_db"], strict=True)
        ]
        ranked = sorted(range(len(gains)), key=gains.__getitem__)
        count = min(count, len(ranked))
        return [ranked[round(step * (len(ranked) - 1) / max(1, count - 1))] for step in range(count)]


def unblend_true_matte(truth: Truth, inpainter: Inpainter) -> np.ndarray:
    """The ceiling of unblending: invert the blend with the true matte where it is below the restorer's limit, inpaint the rest."""
    from clearmark.removal.restore import DEFAULT_ALPHA_LIMIT, unblend

    restored, hole = unblend(truth.watermarked, truth.alpha, truth.colour, limit=DEFAULT_ALPHA_LIMIT)
    return inpainter.inpaint(restored, hole) if hole.any() else restored


def read_rgb(path: Path) -> np.ndarray:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _save_crops(path: Path, held: HeldOutSet, pipeline: _Pipeline, scoring: _Scoring) -> Path:
    from clearmark.bench.crops import CropSample, save_crops
    from clearmark.bench.heldout import load_truth

    samples = []
    for index in scoring.samples(CROP_SAMPLES):
        item, truth = held.items[index], load_truth(held, held.items[index])
        nothing, cleaned = scoring.scores["nothing"], scoring.scores[PIPELINE]
        label = (
            f"{item.name} {item.size}px {item.family}, {'JPEG q' + str(item.jpeg_quality) if item.jpeg_quality else 'PNG'}: "
            f"in mark {nothing['psnr_in_mask_db'][index]:.1f} -> {cleaned['psnr_in_mask_db'][index]:.1f} dB"
        )
        samples.append(CropSample(label, truth.watermarked, read_rgb(pipeline.output / item.input), truth.clean, truth.mask))
    return save_crops(path, samples)


def _score(into: dict[str, list[float]], clean: np.ndarray, result: np.ndarray, true_mask: np.ndarray) -> None:
    """Append one image's four scores."""
    from clearmark.model.metrics import psnr, ssim_map

    score, per_pixel = ssim_map(clean, result)
    into["psnr_db"].append(psnr(clean, result))
    into["ssim"].append(score)
    into["psnr_in_mask_db"].append(psnr(clean, result, true_mask))
    into["ssim_in_mask"].append(float(per_pixel[true_mask].mean()))


def _means(values: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.fmean(scores), 4) for name, scores in values.items()}
