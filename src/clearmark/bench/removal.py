"""Removal throughput: archive in the inbox -> archive in the outbox, against a naive loop.

* **end to end**: a zip of N watermarked 512x512 JPEGs goes into a scratch inbox bucket and
  :func:`clearmark.removal.inbox.process_inbox_item` downloads, cleans, uploads and moves
  it, in a warm worker (detector loaded, one small archive processed untimed before);
* **naive loop** (the in-run baseline): the reference tutorial's loop, one image at a time:
  load it, predict on it alone in float32 (at the pipeline's working size), inpaint, save.
  It runs before and after the archives, and the ratios use the faster of the two runs,
  so a noisy neighbour during one of them cannot flatter the pipeline;
* **peak RSS** of this process during each archive (sampled every 20 ms);
* **stage times**: the mean time per image inside each pipeline stage, from the outbox
  report, which names the stage that bounds throughput.
* **review cost**: the time :func:`clearmark.removal.review.publish_review` takes to build
  and upload the archive's review page, as a share of the archive's removal time
  (target: at most 10 %).
* **inference backends**: the archives run on the configured backend (``auto``: the best this
  machine has, :mod:`clearmark.model.backends`); the smallest archive also runs once on every
  other CPU backend this machine has, so their figures come from the same run.

The large archive repeats the distinct images under new names, so building it costs no
generation time while every member is still decoded, detected, inpainted and encoded.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.bench.measure import PeakRss, scratch_buckets

if TYPE_CHECKING:
    from clearmark.settings import Settings

IMAGE_SIDE = 512
JPEG_QUALITY = 90
WARM_UP_IMAGES = 4  # the untimed archive that warms the worker up
STAGES = ("decode", "detect", "inpaint", "encode")  # the per-member timings of report.json


def build_photos(work: Path, count: int, *, seed: int = 7) -> list[Path]:
    """``count`` distinct synthetic watermarked photos as 512x512 JPEGs (quality 90)."""
    from PIL import Image

    from clearmark.data.synth import generate_synthetic

    summary = generate_synthetic(work / "synth", count, seed=seed, size=IMAGE_SIDE)
    photos = work / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in summary.items:
        path = photos / item.name.replace(".png", ".jpg")
        Image.open(summary.out_dir / "watermarked" / item.name).convert("RGB").save(path, "JPEG", quality=JPEG_QUALITY)
        paths.append(path)
    return paths


def build_archive(photos: list[Path], images: int, out: Path) -> Path:
    """A zip of ``images`` members cycling through ``photos`` (each under its own name)."""
    with zipfile.ZipFile(out, "w") as zf:
        for index in range(images):
            photo = photos[index % len(photos)]
            zf.write(photo, f"photos/{index:05d}-{photo.name}")
    return out


def stage_times(report: dict[str, Any]) -> dict[str, float]:
    """Mean time per image inside each pipeline stage in ms, from a removal's report.json.

    Elapsed time, so it includes waiting for a core.  Stages run in parallel threads, so
    these add up to more than the wall time per image; the one that bounds throughput is
    the stage whose threads serve the fewest images/s (threads x 1000 / its ms).
    """
    from clearmark.removal.report import PROCESSED

    images = [row for row in report["rows"] if row["status"] in PROCESSED]
    if not images:
        raise ValueError("the report has no processed images to time")
    return {stage: round(sum(row[f"{stage}_ms"] for row in images) / len(images), 2) for stage in STAGES}


def end_to_end(settings: Settings, source: str, archive: Path) -> dict[str, Any]:
    """Images/s and peak RSS of one archive through the inbox (``settings``: scratch buckets)."""
    from clearmark.removal.inbox import process_inbox_item
    from clearmark.removal.review import publish_review
    from clearmark.storage import ObjectStore

    with zipfile.ZipFile(archive) as zf:
        images = len(zf.namelist())
    key = archive.name
    ObjectStore(settings).put_file(settings.inbox_bucket, key, archive)
    rss = PeakRss()
    with rss.sampling():
        started = time.perf_counter()
        summary = process_inbox_item(settings, key, model=source)
        seconds = time.perf_counter() - started
    if summary.get("status") != "ok":
        raise RuntimeError(f"the benchmark archive did not process cleanly: {summary}")
    started = time.perf_counter()
    review = publish_review(settings, summary)  # what the inbox DAG's review task runs next
    review_seconds = time.perf_counter() - started
    report = json.loads(ObjectStore(settings).get_bytes(settings.outbox_bucket, summary["report_key"]))
    return {
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 2),
        "wall_ms_per_image": round(seconds * 1000 / images, 2),
        "stage_ms": stage_times(report),
        "peak_rss_mib": rss.mib,
        "review_s": round(review_seconds, 2),
        "review_share_of_removal": round(review_seconds / seconds, 3),
        "review_pictured": review["pictured"],
        "counts": summary.get("counts"),
        "model_version": summary.get("model_version"),
        "backend": report["backend"],
    }


def naive_loop(settings: Settings, source: str, paths: list[Path], out_dir: Path, *, detect_side: int | None) -> dict[str, Any]:
    """Images/s of the one-at-a-time loop: load, predict alone, inpaint, save.

    Like the reference tutorial, it loads the model once (its own copy, no inference backend,
    so nothing the pipeline tuned carries over) and calls it in float32, default layout, batch size 1,
    at the pipeline's working size ``detect_side``, so the ratio measures the pipeline's
    engineering rather than a cheaper resolution.  The first image goes through once
    untimed, as the pipeline's warm-up archive does.
    """
    import numpy as np
    from PIL import Image, ImageOps

    from clearmark.model.inference import full_size_probabilities
    from clearmark.model.loading import load_detector
    from clearmark.removal.runner import get_cached_inpainter

    detector, inpainter = load_detector(source, settings), get_cached_inpainter(settings, "telea")
    out_dir.mkdir(parents=True, exist_ok=True)

    def clean(path: Path) -> None:
        rgb = np.array(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        mask = (full_size_probabilities(detector, rgb, detect_side) > detector.config.threshold).astype(np.uint8) * 255
        Image.fromarray(inpainter.inpaint(rgb, mask)).save(out_dir / path.name, "JPEG", quality=JPEG_QUALITY)

    clean(paths[0])
    rss = PeakRss()
    with rss.sampling():
        started = time.perf_counter()
        for path in paths:
            clean(path)
        seconds = time.perf_counter() - started
    return {"images": len(paths), "seconds": round(seconds, 2), "images_per_s": round(len(paths) / seconds, 2), "peak_rss_mib": rss.mib}


def measure_removal(
    settings: Settings, source: str, work: Path, *, archive_sizes: tuple[int, ...], distinct: int, naive_images: int
) -> dict[str, Any]:
    """End-to-end throughput and peak RSS per archive size, the naive loop, and their ratios;
    the smallest archive again on each other available CPU backend."""
    from clearmark.model.backends import backend_status, choose_backend
    from clearmark.model.inference import DetectionOptions
    from clearmark.removal.runner import get_detector

    photos = build_photos(work, min(distinct, max(archive_sizes)))
    detector = get_detector(settings, source)  # a warm worker: the load is measured on its own
    options = DetectionOptions.for_detector(detector, settings)  # what process_inbox_item will use
    runnable = [choose_backend(name) for name, why in backend_status().items() if why is None and name != detector.backend_name]
    others = [backend.name for backend in runnable if backend.device == "cpu" and backend.unsupported(detector) is None]
    naive_runs = [naive_loop(settings, source, photos[:naive_images], work / "naive", detect_side=options.detect_side)]
    archives, by_backend = {}, {}
    smallest, largest = str(min(archive_sizes)), str(max(archive_sizes))
    with scratch_buckets(settings, "inbox", "outbox", "reports") as scratch:
        # A warm worker has run an archive before: imports and first calls are not per archive.
        end_to_end(scratch, source, build_archive(photos, WARM_UP_IMAGES, work / "warm-up.zip"))
        for size in archive_sizes:
            archive = build_archive(photos, size, work / f"bench-{size}.zip")
            archives[str(size)] = end_to_end(scratch, source, archive)
            archive.unlink()
    for name in others:
        # Buckets of its own: the inbox skips content it has already processed.
        with scratch_buckets(settings.model_copy(update={"inference_backend": name}), "inbox", "outbox", "reports") as scratch:
            get_detector(scratch, source)  # loaded (and compiled) before the clock starts, as for the archives
            end_to_end(scratch, source, build_archive(photos, WARM_UP_IMAGES, work / "warm-up.zip"))
            archive = build_archive(photos, int(smallest), work / f"bench-{smallest}-{name}.zip")
            by_backend[name] = end_to_end(scratch, source, archive)
            archive.unlink()
    naive_runs.append(naive_loop(settings, source, photos[:naive_images], work / "naive", detect_side=options.detect_side))
    naive = {**max(naive_runs, key=lambda run: run["images_per_s"]), "runs_images_per_s": [run["images_per_s"] for run in naive_runs]}
    for result in [*archives.values(), *by_backend.values()]:
        result["speedup_vs_naive"] = round(result["images_per_s"] / naive["images_per_s"], 2)
    return {
        "image": f"{IMAGE_SIDE}x{IMAGE_SIDE} JPEG q{JPEG_QUALITY}, {len(photos)} distinct synthetic photos",
        "batch_size": options.batch_size,
        "detect_workers": options.workers,
        "detect_side": options.detect_side,
        "backend": detector.backend_name,
        "backends": backend_status(),  # None where available, else why not
        "by_backend": {"archive": smallest, "results": by_backend},
        "inpainter": "telea",
        "naive": naive,
        "archives": archives,
        "rss_growth_ratio": round(archives[largest]["peak_rss_mib"] / archives[smallest]["peak_rss_mib"], 3),
    }
