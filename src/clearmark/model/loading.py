"""Loading a detector from wherever it lives: a folder, a registry URI or a run URI.

MLflow downloads are cached under ``settings.cache_dir/models/``, so loading the same
version again costs one registry call and reading the weights from disk.  Heavy imports
(mlflow, torch) stay inside functions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from clearmark.model.detector import CONFIG_FILE, WEIGHTS_FILE, DetectorError, load_detector_folder

if TYPE_CHECKING:
    from clearmark.model.detector import Detector
    from clearmark.settings import Settings


def find_detector_folder(root: Path) -> Path:
    """The detector folder inside a downloaded MLflow model (or ``root`` itself)."""
    for candidate in (root, root / "artifacts" / "detector", *sorted(root.rglob(CONFIG_FILE))):
        folder = candidate if candidate.is_dir() else candidate.parent
        if (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            return folder
    raise DetectorError(f"No detector ({WEIGHTS_FILE} + {CONFIG_FILE}) found under {root}.")


def _cached_download(artifact_uri: str, cache: Path, tracking_uri: str) -> Path:
    """Download an MLflow model once into ``cache`` (atomic rename); later calls reuse it."""
    import mlflow

    if (cache / WEIGHTS_FILE).is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}."))
    # models:/ URIs resolve through the registry URI, which download_artifacts does not take.
    mlflow.set_registry_uri(tracking_uri)
    try:
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(staging), tracking_uri=tracking_uri))
        folder = find_detector_folder(downloaded)
        if cache.exists():  # another process finished first
            return cache
        os.replace(folder, cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache


def resolve_model_version(uri: str, settings: Settings) -> tuple[str, str]:
    """``models:/name@alias`` or ``models:/name/version`` -> (name, version number)."""
    from clearmark.model.registry import mlflow_client

    ref = uri.removeprefix("models:/")
    client = mlflow_client(settings)
    if "@" in ref:
        name, alias = ref.split("@", 1)
        try:
            return name, str(client.get_model_version_by_alias(name, alias).version)
        except Exception as exc:
            raise DetectorError(f"Registered model {name!r} has no alias {alias!r} at {settings.mlflow_tracking_uri}: {exc}") from exc
    name, _, version = ref.partition("/")
    if not version.isdigit():
        raise DetectorError(f"Cannot read model URI {uri!r}; use models:/<name>@<alias> or models:/<name>/<version>.")
    return name, version


def fixed_source(source: str, settings: Settings) -> str:
    """``source`` with a moving reference pinned: ``champion`` or ``models:/<name>@<alias>`` -> ``models:/<name>/<version>`` now.

    Folders, versions and run or logged-model URIs come back unchanged.
    """
    from clearmark.model.registry import CHAMPION, champion_uri

    if source == CHAMPION:
        source = champion_uri(settings)
    if source.startswith("models:/") and "@" in source:
        name, version = resolve_model_version(source, settings)
        return f"models:/{name}/{version}"
    return source


def load_detector(source: str | Path, settings: Settings, *, device: str | None = None, backend: str | None = None) -> Detector:
    """Load a detector from a folder, a ``models:/`` URI (registry or MLflow 3 ``m-`` id) or a ``runs:/`` URI.

    Registry downloads are cached under ``settings.cache_dir/models/<name>/<version>``
    (runs under ``.../models/runs/<run_id>/<path>``, logged models under ``.../models/logged/<id>``).
    ``backend`` (a name of :func:`clearmark.model.backends.available_backends` or ``auto``;
    serving code passes ``settings.inference_backend``) prepares it for serving on the
    backend's device; ``None`` keeps the network as trained, on ``device``.
    """
    from clearmark.model.backends import prepare_backend

    detector = _load(str(source), settings, device if backend is None else "cpu")  # the backend moves it
    if backend is not None:
        prepare_backend(detector, backend, settings)
    return detector


def _load(text: str, settings: Settings, device: str | None) -> Detector:
    if not text.startswith(("models:/", "runs:/")):
        return load_detector_folder(text, device=device)
    models = settings.cache_dir / "models"
    if text.startswith("models:/m-"):  # an MLflow 3 logged model, not (yet) registered
        model_id = text.removeprefix("models:/")
        folder = _cached_download(text, models / "logged" / model_id, settings.mlflow_tracking_uri)
        return load_detector_folder(folder, version=model_id, device=device)
    if text.startswith("models:/"):
        name, version = resolve_model_version(text, settings)
        folder = _cached_download(f"models:/{name}/{version}", models / name / version, settings.mlflow_tracking_uri)
        return load_detector_folder(folder, version=version, device=device)
    run_id, _, path = text.removeprefix("runs:/").partition("/")
    folder = _cached_download(text, models / "runs" / run_id / (path or "model"), settings.mlflow_tracking_uri)
    return load_detector_folder(folder, version=f"run-{run_id}", device=device)
