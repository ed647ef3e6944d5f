"""Evaluation of a detector on one split: pixel-level aggregates, per-image distribution, label."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clearmark.model.metrics import PixelCounts, distribution, quality_label

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

    from clearmark.data.dataset import LocalDataset
    from clearmark.model.detector import Detector
    from clearmark.settings import Settings


def evaluate_pairs(detector: Detector, pairs: Iterable[tuple[Any, ...]], *, progress: bool = True, total: int | None = None) -> dict[str, Any]:
    """Report over (id, RGB, mask) or (id, RGB, mask, alpha or None) pairs, each scored at its own size.

    The detector sees each image as removal does (at its working size, see
    :func:`clearmark.model.inference.full_size_probabilities`), without the mask dilation
    that only serves inpainting. Aggregate metrics sum the confusion counts over all
    pixels of all images (large and small watermarks weigh by their pixels); the
    per-image IoU distribution shows how uneven the detector is.  A matte detector shown
    true alphas also gets ``alpha_mae``: the mean absolute alpha error over the true mask's
    pixels of the pairs that have one.
    """
    from clearmark.model.inference import full_size_maps
    from clearmark.progress import progress_bar

    total_counts = PixelCounts()
    per_image: dict[str, float] = {}
    alpha_error, alpha_pixels = 0.0, 0
    for pair_id, image, mask, *alpha in progress_bar(pairs, desc="evaluate", unit="img", total=total, disable=not progress):
        maps = full_size_maps(detector, image, detector.config.detect_side)
        counts = PixelCounts.from_masks(maps[..., 0] > detector.config.threshold, mask)
        total_counts += counts
        per_image[pair_id] = counts.iou
        if alpha and alpha[0] is not None and detector.config.outputs == "matte":
            alpha_error += float(abs(maps[..., 1][mask] - alpha[0][mask]).sum())
            alpha_pixels += int(mask.sum())
    if not per_image:
        raise ValueError("Nothing to evaluate: the split holds no pairs.")
    aggregate = total_counts.as_dict()
    worst = sorted(per_image.items(), key=lambda item: item[1])[:5]
    return {
        **aggregate,
        "quality": quality_label(aggregate["iou"]),
        "images": len(per_image),
        "per_image_iou": distribution(list(per_image.values())),
        "worst_images": [{"id": pair_id, "iou": iou} for pair_id, iou in worst],
        "threshold": detector.config.threshold,
        "model_version": detector.version,
        "backend": detector.backend_name,
        **({"alpha_mae": alpha_error / alpha_pixels} if alpha_pixels else {}),
    }


def evaluate_split(detector: Detector, data: LocalDataset, split: str = "test", *, progress: bool = True) -> dict[str, Any]:
    """:func:`evaluate_pairs` on one split of a dataset version, with the data's identity."""

    rows = data.split(split)
    report = evaluate_pairs(detector, data.matte_pairs(rows), progress=progress, total=len(rows))
    return {**report, "dataset": data.dataset, "dataset_version": data.version, "manifest_sha256": data.manifest_sha256, "split": split}


def evaluate_model(
    settings: Settings,
    model: str,
    *,
    dataset: str | None = None,
    dataset_version: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    log_to_run: str | None = None,
) -> dict[str, Any]:
    """Load ``model`` (folder or MLflow URI) as removal serves it, evaluate it and log the JSON report to an MLflow run.

    The report goes to ``log_to_run`` if given, else to the run of a ``runs:/`` URI, and the
    run is tagged with the inference backend that scored it.
    """
    from pathlib import Path

    from clearmark.data.catalog import load_training_data
    from clearmark.model.backends import MLFLOW_TAG
    from clearmark.model.loading import load_detector
    from clearmark.model.registry import log_report, mlflow_client

    detector = load_detector(model, settings, backend=settings.inference_backend)
    data = load_training_data(settings, dataset, dataset_version, Path(data_dir) if data_dir else None)
    report = {**evaluate_split(detector, data, split), "model": model}
    run_id = log_to_run or (model.removeprefix("runs:/").split("/")[0] if model.startswith("runs:/") else None)
    if run_id:
        log_report(settings, run_id, report, f"evaluation/{split}.json", metric_prefix=f"{split}_")
        mlflow_client(settings).set_tag(run_id, MLFLOW_TAG, detector.backend_name)
    return report
