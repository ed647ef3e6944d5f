"""``clearmark bench``: end-to-end throughput (inbox -> outbox) against a naive loop, memory and model load time.

Everything is measured in one run on the same machine with the same detector:

* **end to end**: a zip of N watermarked 512x512 JPEGs is put in the inbox bucket and
  :func:`clearmark.removal.inbox.process_inbox_item` downloads, cleans, uploads and moves
  it (detector already loaded, as in a warm worker);
* **naive loop**: for each image, load it, predict on it alone, inpaint, save it;
* **peak RSS** of this process during each phase (sampled every 20 ms);
* **model load**: the champion loaded cold (empty cache: registry download) and cached.

The figures go to ``<out_dir>/bench-<UTC time>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zipfile
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from clearmark.settings import Settings

IMAGE_SIDE = 512
JPEG_QUALITY = 90


class _PeakRss:
    """Highest RSS of this process while the context is open."""

    def __init__(self) -> None:
        self.peak = 0

    @contextmanager
    def sampling(self) -> Iterator[_PeakRss]:
        import psutil

        process, stop = psutil.Process(), threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                self.peak = max(self.peak, process.memory_info().rss)

        thread = threading.Thread(target=sample, daemon=True)
        self.peak = process.memory_info().rss
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    @property
    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


def build_bench_archive(work: Path, images: int) -> tuple[Path, list[Path]]:
    """N synthetic watermarked photos as 512x512 JPEGs (quality 90), and a zip of them."""
    from PIL import Image

    from clearmark.data.synth import generate_synthetic

    summary = generate_synthetic(work / "synth", images, seed=7, size=IMAGE_SIDE)
    photos = work / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in summary.items:
        path = photos / item.name.replace(".png", ".jpg")
        Image.open(summary.out_dir / "watermarked" / item.name).convert("RGB").save(path, "JPEG", quality=JPEG_QUALITY)
        paths.append(path)
    archive = work / "bench.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths:
            zf.write(path, f"photos/{path.name}")
    return archive, paths


def _default_detector(work: Path) -> str:
    """An untrained detector with the default architecture: same compute as a trained one."""
    from clearmark.model.detector import DetectorConfig, build_network, save_detector

    config = DetectorConfig()
    return str(save_detector(build_network(config), config, work / "default-detector"))


def measure_model_load(settings: Settings, source: str, work: Path) -> dict[str, Any]:
    """Seconds to load ``source`` with an empty cache (download) and again from the cache."""
    from clearmark.model.detector import load_detector

    isolated = settings.model_copy(update={"home": work / "load-home"})  # an empty model cache
    timings = {}
    for label in ("cold", "cached"):
        started = time.perf_counter()
        load_detector(source, isolated)
        timings[f"model_load_{label}_s"] = round(time.perf_counter() - started, 3)
    return timings


def naive_loop(settings: Settings, source: str, paths: list[Path], out_dir: Path) -> float:
    """Images/s of the one-at-a-time loop: load, predict alone, inpaint, save.

    Like the reference tutorial, it loads the model once (its own copy, so nothing the
    pipeline tuned carries over) and calls it in float32, default layout, batch size 1.
    """
    import numpy as np
    from PIL import Image, ImageOps

    from clearmark.model.detector import load_detector
    from clearmark.removal.inbox import get_cached_inpainter

    detector, inpainter = load_detector(source, settings), get_cached_inpainter(settings, "telea")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for path in paths:
        rgb = np.array(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        mask = (detector.predict_proba(rgb[None])[0] > detector.config.threshold).astype(np.uint8) * 255
        Image.fromarray(inpainter.inpaint(rgb, mask)).save(out_dir / path.name, "JPEG", quality=JPEG_QUALITY)
    return len(paths) / (time.perf_counter() - started)


def run_bench(
    settings: Settings,
    *,
    images: int = 200,
    naive_images: int = 50,
    model: str | None = None,
    batch_size: int | None = None,
    out_dir: Path = Path("bench-results"),
) -> dict[str, Any]:
    """Run the benchmark against the configured object store and registry; returns and saves the figures."""
    import torch

    from clearmark.model.detector import DetectorError
    from clearmark.removal.inbox import champion_uri, get_detector, process_inbox_item
    from clearmark.storage import ObjectStore

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = settings.home / "bench" / stamp
    if batch_size:
        settings = settings.model_copy(update={"removal_batch_size": batch_size})
    store = ObjectStore(settings)
    store.ensure_buckets([settings.inbox_bucket, settings.outbox_bucket, settings.reports_bucket])
    archive, paths = build_bench_archive(work, images)

    source, note = model or champion_uri(settings), ""
    try:
        load = measure_model_load(settings, source, work)
    except DetectorError as exc:
        source, note = _default_detector(work), f"no champion ({exc}); used an untrained default-config detector (same compute)"
        load = measure_model_load(settings, source, work)
    worker_load = {}
    for label in ("first", "again"):  # a warm worker keeps the detector: "again" is one registry lookup
        started = time.perf_counter()
        detector = get_detector(settings, source)
        worker_load[f"worker_load_{label}_s"] = round(time.perf_counter() - started, 3)

    key = f"bench-{stamp}.zip"
    store.put_file(settings.inbox_bucket, key, archive)
    rss_e2e, rss_naive = _PeakRss(), _PeakRss()
    with rss_e2e.sampling():
        started = time.perf_counter()
        summary = process_inbox_item(settings, key, model=source)
        e2e_s = time.perf_counter() - started
    with rss_naive.sampling():
        naive = naive_loop(settings, source, paths[:naive_images], work / "naive")
    e2e = images / e2e_s
    figures = {
        "timestamp": stamp,
        "images": images,
        "image_size": f"{IMAGE_SIDE}x{IMAGE_SIDE} JPEG q{JPEG_QUALITY}",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(detector.device),
        "model": source,
        "model_version": summary.get("model_version"),
        "architecture": f"{detector.config.architecture}/{detector.config.encoder}",
        "batch_size": settings.removal_batch_size,
        "autocast": settings.removal_autocast,
        "end_to_end_images_per_s": round(e2e, 2),
        "pipeline_images_per_s": summary.get("images_per_s"),
        "naive_images_per_s": round(naive, 2),
        "naive_images": len(paths[:naive_images]),
        "speedup_vs_naive": round(e2e / naive, 2),
        "peak_rss_end_to_end_mib": rss_e2e.mib,
        "peak_rss_naive_mib": rss_naive.mib,
        **load,
        **worker_load,
        "counts": summary.get("counts"),
        "status": summary.get("status"),
        "note": note,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"bench-{stamp}.json").write_text(json.dumps(figures, indent=2) + "\n")
    (out_dir / f"bench-{stamp}.md").write_text(_markdown(figures))
    return figures


def _markdown(figures: dict[str, Any]) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in figures.items())
    return f"# clearmark bench {figures['timestamp']}\n\n| figure | value |\n|---|---|\n{rows}\n"
