"""Field quality per model version: reviewers' flags counted and logged on the MLflow model version.

The daily ``clearmark_review_daily`` DAG calls :func:`log_field_quality`.  It takes the
current flag of every reviewed image (:mod:`clearmark.data.feedback`), counts them per
model version that cleaned the image and sets the counts as tags of that registered model
version (``field_flag_rate``, ``field_flags_<flag>``, ``field_flagged_images``), so the
registry shows how each champion did in the field next to its offline metrics.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clearmark.data.feedback import current_flags, field_quality, read_flag_events
from clearmark.model.registry import mlflow_client

if TYPE_CHECKING:
    from clearmark.settings import Settings


def log_field_quality(settings: Settings) -> dict[str, Any]:
    """Count the current flags per model version and tag each registered version with them.

    Versions the registry does not hold (a detector folder's hash, say) are counted and
    returned under ``not_registered`` but logged nowhere.  Idempotent: a re-run sets the
    same tags.
    """
    from mlflow.exceptions import MlflowException

    from clearmark.storage import ObjectStore

    quality = field_quality(list(current_flags(read_flag_events(ObjectStore(settings))).values()))
    client = mlflow_client(settings)
    logged, not_registered = {}, {}
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for version, figures in quality.items():
        try:
            client.get_model_version(settings.registered_model, version)
        except MlflowException:
            not_registered[version] = figures
            continue
        for name, value in {**figures, "field_quality_at": stamp}.items():
            client.set_model_version_tag(settings.registered_model, version, name, str(value))
        logged[version] = figures
    return {"model": settings.registered_model, "logged": logged, "not_registered": not_registered}
