"""One archive, one mark (issue 14): what estimating the shared mark gains over per-image removal.

:func:`measure_collection` builds two archives of held-out photographs
(:func:`clearmark.data.photos.photo_files` ``"heldout"``), each image a crop saved as JPEG
(quality drawn in ``jpeg_quality``):

* **collection**: every photo under the *same* semi-transparent held-out logo-and-name mark
  (:data:`clearmark.data.marks.PHOTO_HELDOUT_STYLES`, family ``centre_logo``);
* **mixed**: every photo under a mark of its own (no shared mark to find).

On the collection it scores (PSNR whole image and inside the true mark, as the quality
section does): doing nothing, telea with the true mask (dilated as production dilates),
the shipped pipeline with the shared mark off (per-image restoration) and on (archive-level
estimation), the estimated mark's alpha error against the true one, and each path's wall
time per image in the same run (after an untimed warm-up run).  On the mixed archive it scores the pipeline with the
feature on and off.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from clearmark.data.marks import Matte
    from clearmark.settings import Settings

FAMILY = "centre_logo"  # a logo with its name, centred: the agency mark of a stock collection
OPACITY = (0.3, 0.8)  # the mark's peak alpha: semi-transparent, so the photo is there to recover


@dataclass(frozen=True)
class CollectionSpec:
    """What the two archives hold; the same spec always gives the same images."""

    images: int = 60
    size: int = 512
    jpeg_quality: tuple[int, int] = (88, 98)
    seed: int = 1414


@dataclass
class _Archive:
    folder: Path  # inputs/<name>.jpg
    cleans: list[np.ndarray]
    mattes: list[Matte]


def measure_collection(settings: Settings, model: str, work: Path, *, spec: CollectionSpec | None = None, progress: bool = True) -> dict[str, Any]:
    """The figures of the module docstring for the detector ``model``; archives and outputs go under ``work``."""
    import numpy as np

    from clearmark.bench.quality import read_rgb
    from clearmark.removal.pipeline import sidecar

    spec = spec or CollectionSpec()
    rng = np.random.default_rng(spec.seed)
    shared = _semi_transparent_mark(rng, spec.size)
    collection = _build(work / "collection", spec, rng, lambda: shared)
    mixed = _build(work / "mixed", spec, rng, lambda: _semi_transparent_mark(rng, spec.size))

    figures: dict[str, Any] = {"spec": asdict(spec), "mark_opacity": round(float(shared.alpha.max()), 4), "mark_coverage": round(float(shared.footprint.mean()), 4)}
    telea = _telea_true_mask(settings, model, collection)  # loads the detector: neither timed path pays for it
    # The first run through the pipeline also pays the backend's first inferences per input
    # shape (60 images: 9.2 s first against 6.4-7.3 s after, on loaded cores): untimed.
    _pipeline(settings, model, collection, work / "warm-up", shared_mark=False, progress=progress)
    off = _pipeline(settings, model, collection, work / "collection-off", shared_mark=False, progress=progress)
    on = _pipeline(settings, model, collection, work / "collection-on", shared_mark=True, progress=progress)
    figures["collection"] = {
        "nothing": _scores(collection, [read_rgb(path) for path in sorted(collection.folder.iterdir())]),
        "telea_true_mask": telea,
        "per_image": off,
        "shared_mark": on,
        "cost_ratio_shared_vs_per_image": round(on["seconds_per_image"] / off["seconds_per_image"], 3),
    }
    watermark = sidecar(work / "collection-on" / "out", ".watermark.png")
    if watermark.is_file():
        estimated = _read_alpha(watermark)
        error = np.abs(estimated - shared.alpha)
        figures["collection"]["alpha_error"] = {
            "in_mark": round(float(error[shared.footprint].mean()), 4),
            "outside": round(float(error[~shared.footprint].mean()), 4),
        }
    figures["mixed"] = {
        "per_image": _pipeline(settings, model, mixed, work / "mixed-off", shared_mark=False, progress=progress),
        "shared_mark": _pipeline(settings, model, mixed, work / "mixed-on", shared_mark=True, progress=progress),
    }
    return figures


def _read_alpha(path: Path) -> np.ndarray:
    """The alpha of an RGBA PNG, 0..1."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"))[..., 3].astype(np.float32) / 255


def _semi_transparent_mark(rng: np.random.Generator, size: int) -> Matte:
    from clearmark.data import marks

    for _ in range(500):
        matte, info = marks.draw_mark(rng, size, marks.PHOTO_HELDOUT_STYLES)
        if info.family == FAMILY and OPACITY[0] <= float(matte.alpha.max()) <= OPACITY[1]:
            return matte
    raise RuntimeError(f"no semi-transparent {FAMILY} mark drawn in 500 tries: check clearmark.data.marks")


def _build(folder: Path, spec: CollectionSpec, rng: np.random.Generator, mark: Any) -> _Archive:
    from PIL import Image

    from clearmark.data import photos

    files = [path for paths in photos.photo_files("heldout").values() for path in paths]
    inputs = folder / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    cleans, mattes = [], []
    for index in range(spec.images):
        clean = photos.photo_crop(rng, files, spec.size)[0]
        matte = mark()
        quality = int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1))
        Image.fromarray(matte.blend(clean)).save(inputs / f"{index:04d}.jpg", "JPEG", quality=quality)
        cleans.append(clean)
        mattes.append(matte)
    return _Archive(inputs, cleans, mattes)


def _scores(archive: _Archive, results: list[np.ndarray]) -> dict[str, float]:
    from clearmark.model.metrics import psnr

    return {
        "psnr_db": round(statistics.fmean(psnr(c, r) for c, r in zip(archive.cleans, results, strict=True)), 4),
        "psnr_in_mask_db": round(
            statistics.fmean(psnr(c, r, m.footprint) for c, r, m in zip(archive.cleans, results, archive.mattes, strict=True)), 4
        ),
    }


def _pipeline(settings: Settings, model: str, archive: _Archive, work: Path, *, shared_mark: bool, progress: bool) -> dict[str, Any]:
    """The shipped pipeline on ``archive``'s inputs (``clearmark remove``), scored, with its wall time per image."""
    from clearmark.bench.quality import read_rgb
    from clearmark.removal.runner import run_removal

    output = work / "out"
    started = time.perf_counter()
    outputs = run_removal(settings, archive.folder, output, model=model, shared_mark=shared_mark, overwrite=True, progress=progress)
    seconds = time.perf_counter() - started
    results = [read_rgb(output / path.name) for path in sorted(archive.folder.iterdir())]
    return {
        **_scores(archive, results),
        "seconds_per_image": round(seconds / len(results), 4),
        "restorations": outputs.report.restorations,
        "shared_marks": [{k: v for k, v in entry.items() if k in ("shared", "score", "reason")} for entry in outputs.report.shared_marks],
    }


def _telea_true_mask(settings: Settings, model: str, archive: _Archive) -> dict[str, float]:
    """Telea on the true mask, dilated by production's rule (the ceiling of mask-then-inpaint)."""
    import numpy as np

    from clearmark.bench.quality import read_rgb
    from clearmark.model.inference import DetectionOptions, probabilities_to_detection
    from clearmark.removal.inpaint import get_inpainter, inpaint_images
    from clearmark.removal.runner import get_detector

    production = DetectionOptions.for_detector(get_detector(settings, model), settings)
    watermarked = [read_rgb(path) for path in sorted(archive.folder.iterdir())]
    masks = [probabilities_to_detection(m.footprint.astype(np.float32), *m.alpha.shape, production).mask for m in archive.mattes]
    return _scores(archive, inpaint_images(get_inpainter("telea", settings), watermarked, masks))
