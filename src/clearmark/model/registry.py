"""MLflow access shared by training, evaluation and the gate: client, reachability, logging.

Registry conventions (docs/architecture.md): registered model ``settings.registered_model``,
aliases ``champion``, ``previous`` and ``challenger``; no stages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from clearmark.settings import Settings

MODEL_ARTIFACT = "model"  # the pyfunc, inside the run
EXPORT_ARTIFACT = "export"  # the plain detector folder, inside the run
MODEL_URI_TAG = "model_uri"  # run tag: where the run's pyfunc lives (MLflow 3 logged-model URI)
CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
# Runtime requirements of the pyfunc (clearmark itself is installed in every image).
PYFUNC_REQUIREMENTS = ["torch>=2.14", "segmentation-models-pytorch>=0.6", "safetensors>=0.4", "numpy"]


def champion_uri(settings: Settings) -> str:
    """The registry URI of the current champion, ``models:/<registered model>@champion``."""
    return f"models:/{settings.registered_model}@{CHAMPION}"


class MlflowUnavailableError(RuntimeError):
    """The tracking server does not answer; Airflow retries the task."""


def check_mlflow(settings: Settings, timeout_s: float = 10.0) -> None:
    """Fail fast, with advice, when an HTTP tracking server does not answer its health check."""
    import urllib.error
    import urllib.request

    uri = settings.mlflow_tracking_uri
    if not uri.startswith(("http://", "https://")):
        return  # a local store (sqlite:, file:) has no server to reach
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        problem = str(getattr(exc, "reason", exc))
    raise MlflowUnavailableError(
        f"MLflow at {uri} is unreachable ({problem}). Start the embedded stack with `clearmark stack up`, "
        "or set CLEARMARK_MLFLOW_TRACKING_URI to a running tracking server; the task can be retried."
    )


def mlflow_client(settings: Settings) -> MlflowClient:
    """A client bound to the configured tracking and registry server."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def use_tracking_server(settings: Settings) -> None:
    """Point the fluent mlflow API at the configured server (and quiet git probing)."""
    import mlflow

    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)


def log_detector_model(folder: Path) -> str:
    """Log ``folder`` (a saved detector) to the active run as a pyfunc and as plain files.

    Returns the URI that registers and loads the pyfunc.
    """
    import mlflow

    from clearmark.model.pyfunc import DETECTOR_ARTIFACT, DetectorPyfunc, signature

    info = mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=DetectorPyfunc(),
        artifacts={DETECTOR_ARTIFACT: str(folder)},
        signature=signature(),
        pip_requirements=PYFUNC_REQUIREMENTS,
    )
    mlflow.log_artifacts(str(folder), EXPORT_ARTIFACT)
    return info.model_uri


def log_report(settings: Settings, run_id: str, report: dict[str, Any], artifact_file: str, *, metric_prefix: str = "") -> None:
    """Attach a JSON report to a run (finished or not) and its numeric top-level fields as metrics."""
    client = mlflow_client(settings)
    client.log_dict(run_id, json.loads(json.dumps(report, default=str)), artifact_file)
    for key, value in report.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            client.log_metric(run_id, f"{metric_prefix}{key}", float(value))
