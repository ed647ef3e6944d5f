"""Quality-gated promotion in the MLflow registry (aliases only, no stages).

The training DAG calls :func:`gate_candidate`, then :func:`promote` or :func:`reject`
depending on ``decision["passed"]``; ``clearmark promote --run-id`` does the same in one
command.  Removal quality is scored by a function the caller passes in
(``clearmark.removal.quality.score_removal``): the model layer does not import removal.  :func:`ensure_baseline_champion` gives an empty registry its first champion:
the detector bundled in ``models/baseline/``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.model.registry import CHALLENGER, CHAMPION, MODEL_URI_TAG, PREVIOUS

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from clearmark.data.dataset import LocalDataset
    from clearmark.model.detector import Detector
    from clearmark.settings import Settings

BASELINE_TAG = "bundled_baseline"  # model-version tag: SHA-256 of the bundled weights
# (settings, detector, data, split) -> {"psnr_whole", "psnr_mark", ...} or {"skipped": why}
RemovalScorer = Callable[["Settings", "Detector", "LocalDataset", str], dict[str, Any]]
log = logging.getLogger(__name__)


class PromotionError(RuntimeError):
    """The registry is not in the state the decision was made for; the message says what to do."""


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or ``None`` (also when the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="clearmark watermark-mask detector (aliases: champion, previous, challenger).")


def _register(settings: Settings, model_uri: str, tags: dict[str, str] | None = None) -> str:
    """Register a logged model (MLflow 3 ``models:/m-...`` or ``runs:/`` URI); returns the version."""
    import contextlib
    import io

    import mlflow

    from clearmark.model.registry import use_tracking_server

    use_tracking_server(settings)
    # MLflow prints its notices ("Created version '2' ...") on stderr, which Airflow files as
    # errors: they go to the log at info level instead.
    with contextlib.redirect_stderr(io.StringIO()) as notices:
        version = str(mlflow.register_model(model_uri, settings.registered_model, tags=tags).version)
    for line in notices.getvalue().splitlines():
        if line.strip():
            log.info(line.strip())
    return version


def register_run_model(settings: Settings, run_id: str) -> str:
    """Register the pyfunc a training run logged (once: a retried task reuses the version)."""
    from clearmark.model.registry import mlflow_client

    client = mlflow_client(settings)
    name = settings.registered_model
    _ensure_registered_model(client, name)
    existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        return str(min(int(v.version) for v in existing))
    model_uri = client.get_run(run_id).data.tags.get(MODEL_URI_TAG)
    if not model_uri:
        raise PromotionError(f"Run {run_id} logged no model (tag {MODEL_URI_TAG!r} missing): did its training finish?")
    return _register(settings, model_uri)


def _evaluate_version(settings: Settings, version: str, data: LocalDataset, split: str, removal_scorer: RemovalScorer) -> dict[str, Any]:
    from clearmark.model.evaluate import evaluate_split
    from clearmark.model.loading import load_detector

    detector = load_detector(f"models:/{settings.registered_model}/{version}", settings, backend=settings.inference_backend)  # as removal serves it
    return {**evaluate_split(detector, data, split), "removal": removal_scorer(settings, detector, data, split), "version": version}


def gate_candidate(settings: Settings, run_id: str, *, removal_scorer: RemovalScorer) -> dict[str, Any]:
    """Register the run's model, evaluate it and the champion on the same split, decide.

    ``removal_scorer`` measures each model's removal quality on the split (detection plus
    the shipped restorer).  The decision (JSON) is logged to the run as
    ``gate/decision.json`` (the run tagged ``gate`` and ``inference_backend``) and returned: ``{"passed", "reasons", "removal_check",
    "candidate": {metrics..., "removal", "version"}, "champion": {...} | None, ...}``.
    """
    from clearmark.data.catalog import load_training_data
    from clearmark.model.gate import decide, load_gate_config, removal_check
    from mlflow.exceptions import MlflowException

    from clearmark.model.backends import MLFLOW_TAG
    from clearmark.model.registry import check_mlflow, log_report, mlflow_client

    check_mlflow(settings)
    gate = load_gate_config(settings.gate_file)
    client = mlflow_client(settings)
    try:
        tags = client.get_run(run_id).data.tags
    except MlflowException as exc:
        raise PromotionError(
            f"MLflow at {settings.mlflow_tracking_uri} has no run {run_id!r}: pass the run_id that `clearmark train` printed on its last line."
        ) from exc
    location = tags.get("data_location", "")
    data_dir = Path(location) if location and not location.startswith("s3://") else None
    data = load_training_data(settings, tags.get("dataset"), tags.get("dataset_version"), data_dir)

    version = register_run_model(settings, run_id)
    candidate = _evaluate_version(settings, version, data, gate.split, removal_scorer)
    current = _alias_version(client, settings.registered_model, CHAMPION)
    champion = None
    if current is not None and str(current.version) != version:
        champion = _evaluate_version(settings, str(current.version), data, gate.split, removal_scorer)
    passed, reasons = decide(candidate, champion, gate)
    decision = {
        "passed": passed,
        "reasons": reasons,
        "removal_check": removal_check(candidate, champion, gate)[1],
        "run_id": run_id,
        "model": settings.registered_model,
        "dataset": data.dataset,
        "dataset_version": data.version,
        "split": gate.split,
        "thresholds": gate.minimum,
        "removal_compare": list(gate.removal_compare),
        "removal_tolerance_db": gate.removal_tolerance_db,
        "candidate": candidate,
        "champion": champion,
        "decided_at": datetime.now(UTC).isoformat(),
    }
    log_report(settings, run_id, candidate, f"evaluation/{gate.split}.json", metric_prefix=f"{gate.split}_")
    client.log_dict(run_id, json.loads(json.dumps(decision, default=str)), "gate/decision.json")
    client.set_tag(run_id, "gate", "passed" if passed else "rejected")
    client.set_tag(run_id, MLFLOW_TAG, candidate["backend"])
    return json.loads(json.dumps(decision, default=str))


def promote(settings: Settings, decision: dict[str, Any]) -> dict[str, Any]:
    """Move ``champion`` to the candidate; the champion it replaces keeps ``previous``."""
    from clearmark.model.registry import mlflow_client

    if not decision.get("passed"):
        raise PromotionError(f"Refusing to promote: the candidate failed the gate ({'; '.join(decision.get('reasons', []))}).")
    client = mlflow_client(settings)
    name = settings.registered_model
    version = str(decision["candidate"]["version"])
    current = _alias_version(client, name, CHAMPION)
    expected = decision["champion"]["version"] if decision.get("champion") else None
    if current is not None and str(current.version) not in {expected, version}:
        raise PromotionError(
            f"The champion moved to version {current.version} after this gate compared against {expected or 'no champion'}; "
            "run the gate again (`clearmark promote --run-id ...`)."
        )
    previous = None if current is None or str(current.version) == version else str(current.version)
    if previous is not None:
        client.set_registered_model_alias(name, PREVIOUS, previous)
    client.set_registered_model_alias(name, CHAMPION, version)
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, version, "gate", "passed")
    client.set_model_version_tag(name, version, "promoted_at", datetime.now(UTC).isoformat())
    return {"promoted": True, "model": name, "champion": version, "previous": previous, "reasons": decision["reasons"]}


def reject(settings: Settings, decision: dict[str, Any]) -> dict[str, Any]:
    """Give the candidate ``challenger`` and record why it was not promoted (version tag + description)."""
    from clearmark.model.registry import mlflow_client

    client = mlflow_client(settings)
    name = settings.registered_model
    version = str(decision["candidate"]["version"])
    why = "; ".join(decision["reasons"])
    client.set_registered_model_alias(name, CHALLENGER, version)
    client.set_model_version_tag(name, version, "gate", "rejected")
    client.set_model_version_tag(name, version, "gate_reasons", why[:5000])
    client.update_model_version(name, version, description=f"Not promoted ({decision.get('decided_at', '')}): {why}")
    champion = _alias_version(client, name, CHAMPION)
    return {"promoted": False, "model": name, "challenger": version, "champion": None if champion is None else str(champion.version), "reasons": decision["reasons"]}


def ensure_baseline_champion(settings: Settings) -> str | None:
    """Register the bundled baseline as ``champion`` when the registry has none.

    Idempotent: returns ``None`` when a champion exists; reuses a baseline version left
    by an interrupted earlier call.  Returns the champion's version otherwise.
    """
    import mlflow

    from clearmark.model.detector import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE
    from clearmark.model.registry import check_mlflow, log_detector_model, mlflow_client, use_tracking_server

    check_mlflow(settings)
    client = mlflow_client(settings)
    name = settings.registered_model
    if _alias_version(client, name, CHAMPION) is not None:
        return None
    folder = Path(settings.baseline_dir)
    if not (folder / WEIGHTS_FILE).is_file():
        raise PromotionError(f"No bundled baseline at {folder} ({WEIGHTS_FILE} missing); restore models/baseline/ or set CLEARMARK_BASELINE_DIR.")
    record = json.loads((folder / CONFIG_FILE).read_text())
    _ensure_registered_model(client, name)
    reusable = client.search_model_versions(f"name='{name}' and tags.{BASELINE_TAG}='{record['weights_sha256']}'")
    if reusable:
        version = str(min(int(v.version) for v in reusable))
    else:
        use_tracking_server(settings)
        mlflow.set_experiment(settings.experiment)
        metrics = json.loads((folder / METRICS_FILE).read_text()) if (folder / METRICS_FILE).is_file() else {}
        with mlflow.start_run(run_name="bundled-baseline") as run:
            mlflow.set_tags(
                {"source": "bundled-baseline", "dataset": settings.dataset, "dataset_version": str(record.get("data_version")), BASELINE_TAG: record["weights_sha256"]}
            )
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)})
            model_uri = log_detector_model(folder)
            mlflow.set_tag(MODEL_URI_TAG, model_uri)
        version = _register(settings, model_uri, tags={BASELINE_TAG: record["weights_sha256"]})
        client.update_model_version(name, version, description=f"Bundled baseline detector ({folder.name}/), run {run.info.run_id}.")
    client.set_registered_model_alias(name, CHAMPION, version)
    return version
