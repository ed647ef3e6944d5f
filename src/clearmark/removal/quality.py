"""Removal quality of a detector on a dataset split, as the quality gate compares it.

:func:`score_removal` is what ``clearmark promote`` and the training DAG's gate inject into
:func:`clearmark.model.promotion.gate_candidate` (the model layer does not import removal).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clearmark.data.dataset import LocalDataset
    from clearmark.model.detector import Detector
    from clearmark.settings import Settings

CHUNK = 8  # images detected together


def score_removal(settings: Settings, detector: Detector, data: LocalDataset, split: str) -> dict[str, Any]:
    """Mean PSNR (dB) against the clean originals of ``split``, of the whole image and inside the true mark.

    Each image goes through production's detection (``DetectionOptions.for_detector``) and
    the shipped restorer (``settings.inpainter``).  A split without clean images, or
    without any watermark, returns ``{"skipped": why}``.
    """
    import statistics

    from clearmark.data.dataset import read_mask, read_rgb
    from clearmark.model.inference import DetectionOptions, detect_images
    from clearmark.model.metrics import psnr
    from clearmark.removal.inpaint import as_restorer, get_inpainter

    rows = data.split(split)
    rows = rows[rows["clean_key"].notna()]
    if rows.empty:
        return {"skipped": f"split {split!r} of {data.dataset} {data.version} has no clean images to score removal against"}
    restorer = as_restorer(get_inpainter(settings.inpainter, settings))
    options = DetectionOptions.for_detector(detector, settings)
    whole: list[float] = []
    in_mark: list[float] = []
    for start in range(0, len(rows), CHUNK):
        chunk = rows.iloc[start : start + CHUNK]
        watermarked = [read_rgb(data.root / key) for key in chunk["watermarked_key"]]
        for row, image, detection in zip(chunk.itertuples(index=False), watermarked, detect_images(detector, watermarked, options), strict=True):
            clean, truth = read_rgb(data.root / row.clean_key), read_mask(data.root / row.mask_key)
            result = restorer.restore(image, detection)[0] if detection.found else image
            whole.append(psnr(clean, result))
            if truth.any():
                in_mark.append(psnr(clean, result, truth))
    if not in_mark:
        return {"skipped": f"no image of split {split!r} of {data.dataset} {data.version} has a watermark"}
    return {
        "psnr_whole": round(statistics.fmean(whole), 4),
        "psnr_mark": round(statistics.fmean(in_mark), 4),
        "images": len(whole),
        "restorer": restorer.name,
    }
