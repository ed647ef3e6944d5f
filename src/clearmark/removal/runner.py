"""The removal service of one process: its cached detector and inpainter, and :func:`run_removal`.

The CLI (``clearmark remove``), the inbox and the bench clean through :func:`run_removal`.
A worker process loads each detector version and each inpainter once, then reuses them
for every archive it cleans.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from clearmark.model.registry import champion_uri
from clearmark.removal.archive import Limits

if TYPE_CHECKING:
    from clearmark.model.detector import Detector
    from clearmark.removal.inpaint import Inpainter
    from clearmark.removal.pipeline import RemovalOutputs
    from clearmark.settings import Settings

# One detector and one inpainter per worker process, keyed by what identifies them.
_DETECTORS: dict[tuple[str, ...], Detector] = {}
_INPAINTERS: dict[str, Inpainter] = {}
_LOCK = threading.Lock()


def get_detector(settings: Settings, model: str | None = None, backend: str | None = None) -> Detector:
    """The detector for ``model`` (default: the champion), loaded once per process, version and
    inference backend (default: ``settings.inference_backend``), prepared for serving.

    A registry alias is resolved on every call (one cheap registry request), so a newly
    promoted champion is picked up by the next archive.
    """
    from clearmark.model.loading import load_detector, resolve_model_version

    source = model or champion_uri(settings)
    if source.startswith("models:/"):
        name, version = resolve_model_version(source, settings)
        key: tuple[str, ...] = (settings.mlflow_tracking_uri, name, version)
        source = f"models:/{name}/{version}"
    elif source.startswith("runs:/"):
        key = (settings.mlflow_tracking_uri, source)
    else:
        folder = Path(source).resolve()
        weights = folder / "model.safetensors"
        key = (str(folder), str(weights.stat().st_mtime_ns) if weights.is_file() else "")  # a rewritten folder reloads
    backend = backend or settings.inference_backend
    key = (*key, backend)
    with _LOCK:
        if key not in _DETECTORS:
            _DETECTORS[key] = load_detector(source, settings, backend=backend)
        return _DETECTORS[key]


def get_cached_inpainter(settings: Settings, name: str | None = None) -> Inpainter:
    """The inpainter ``name`` (default: settings), built once per process."""
    from clearmark.removal.inpaint import get_inpainter

    name = name or settings.inpainter
    with _LOCK:
        if name not in _INPAINTERS:
            _INPAINTERS[name] = get_inpainter(name, settings)
        return _INPAINTERS[name]


def run_removal(
    settings: Settings,
    input_path: Path,
    output_path: Path,
    *,
    model: str | None = None,
    inpainter: str | None = None,
    backend: str | None = None,
    save_masks: bool = False,
    threshold: float | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    shared_mark: bool | None = None,
) -> RemovalOutputs:
    """Clean ``input_path`` into ``output_path`` with the configured detector, inference backend and inpainter.

    An existing output is refused unless ``overwrite`` (see :func:`remove_watermarks`).
    ``shared_mark`` (default: ``settings.shared_mark``) estimates the marks groups of images share.
    """
    from clearmark.model.inference import DetectionOptions
    from clearmark.removal.pipeline import check_outputs, remove_watermarks

    check_outputs(output_path, save_masks=save_masks, overwrite=overwrite)  # before a model is loaded
    detector = get_detector(settings, model, backend)
    return remove_watermarks(
        input_path,
        output_path,
        detector=detector,
        inpainter=get_cached_inpainter(settings, inpainter),
        options=DetectionOptions.for_detector(detector, settings, threshold=threshold, batch_size=batch_size),
        limits=Limits.from_settings(settings),
        save_masks=save_masks,
        overwrite=overwrite,
        progress=progress,
        shared_mark=settings.shared_mark if shared_mark is None else shared_mark,
    )

