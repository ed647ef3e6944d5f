"""Detection latency at 512x512 (batch 1 and the best batch) and the champion's load time.

The in-run baselines: the plain float32, batch-1 call a tutorial makes
(``Detector.predict_proba``), and the cold (downloading) model load.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.bench.measure import latency_ms

if TYPE_CHECKING:
    import numpy as np

    from clearmark.model.detector import Detector
    from clearmark.settings import Settings


def _timings(call: Any, repeats: int) -> list[float]:
    call()  # warm-up: allocator, oneDNN / cuDNN kernel choice
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def measure_latency(
    detector: Detector, plain_detector: Detector, images: list[np.ndarray], settings: Settings, *, batch_sizes: tuple[int, ...], repeats: int
) -> dict[str, Any]:
    """Per-image latency of the production path per batch size, against the plain float32 batch-1 call.

    ``detector`` is the removal workers' (``get_detector``: BatchNorm folded); ``plain_detector``
    the same model as ``load_detector`` returns it, as a tutorial would call it.
    """
    import numpy as np
    import torch

    from clearmark.model.inference import DetectionOptions, predict

    if detector.device.type == "cuda":
        synchronised = lambda call: (call(), torch.cuda.synchronize())  # noqa: E731 - time the work, not the launch
    else:
        synchronised = lambda call: call()  # noqa: E731
    plain = _timings(lambda: synchronised(lambda: plain_detector.predict_proba(images[0][None])), repeats)
    per_batch: dict[str, Any] = {}
    for size in batch_sizes:
        batch = np.stack([images[i % len(images)] for i in range(size)])
        options = DetectionOptions.for_detector(detector, settings, batch_size=size)
        seconds = _timings(lambda batch=batch, options=options: synchronised(lambda: predict(detector, batch, options)), max(3, repeats // size))
        per_image = [s / size for s in seconds]
        per_batch[str(size)] = {"per_image": latency_ms(per_image), "images_per_s": round(size / (sum(seconds) / len(seconds)), 2)}
    best = min(per_batch, key=lambda size: per_batch[size]["per_image"]["mean_ms"])
    baseline = latency_ms(plain)
    return {
        "image": "512x512 RGB",
        "device": str(detector.device),
        "plain_float32_batch1": baseline,
        "batch1": per_batch[str(batch_sizes[0])]["per_image"],
        "best_batch": int(best),
        "best_batch_per_image": per_batch[best]["per_image"],
        "speedup_best_vs_plain": round(baseline["mean_ms"] / per_batch[best]["per_image"]["mean_ms"], 2),
        "by_batch": per_batch,
    }


def measure_model_load(settings: Settings, source: str, work: Path) -> dict[str, Any]:
    """Seconds to load ``source`` as removal serves it with an empty cache (the registry download and
    the inference backend's compile) and again from the cache."""
    from clearmark.model.loading import load_detector

    isolated = settings.model_copy(update={"home": work / "load-home"})  # an empty model cache
    timings = {}
    for label in ("cold", "cached"):
        started = time.perf_counter()
        load_detector(source, isolated, backend=isolated.inference_backend)
        timings[f"{label}_s"] = round(time.perf_counter() - started, 3)
    timings["speedup_cached_vs_cold"] = round(timings["cold_s"] / max(timings["cached_s"], 1e-3), 1)
    return {"model": source, **timings}
