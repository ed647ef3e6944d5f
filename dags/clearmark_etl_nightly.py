"""
### clearmark nightly ETL

Lands every source of a dataset (Kaggle, local folders, the offline synthetic
generator; declared in `config/sources.yaml`) in object storage, then builds an
immutable curated version of (watermarked, clean, mask) pairs with a Parquet manifest.

`extract` -> `load_raw` (incremental by content hash) -> `curate` (normalise, reject bad
inputs with reasons) -> `validate` (Great Expectations suite `curated_manifest`; Data Docs
uploaded to the reports bucket) -> `publish` (marker written last; updates the curated
dataset Asset, which schedules `clearmark_train`).

A failed validation fails `validate` and the version is never published. Every step is
idempotent: a re-run with unchanged sources uploads 0 bytes and re-uses the version.
Run the same steps without Airflow: `clearmark etl run --dataset synthetic`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from clearmark.orchestration import DEFAULT_ARGS, curated_asset, export_kaggle_credentials, task_settings
from clearmark.settings import get_settings

CURATED = curated_asset()
CURATED_EVENT_KEYS = ("dataset", "version", "rows", "reject_share")


@dag(
    dag_id="clearmark_etl_nightly",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clearmark", "etl", "data-quality"],
    doc_md=__doc__,
    params={"dataset": Param(get_settings().dataset, type="string", description="Dataset name from config/sources.yaml")},
)
def clearmark_etl_nightly() -> None:
    @task(multiple_outputs=False)
    def extract(params: dict | None = None, ts: str | None = None) -> dict:
        """Bring every source of the dataset to a local folder (Kaggle download, synthetic generator, ...)."""
        from clearmark.data.etl import extract_step

        export_kaggle_credentials()
        return extract_step(task_settings(), params["dataset"], ts=ts)

    @task(multiple_outputs=False)
    def load_raw(extracted: dict, ts: str | None = None) -> dict:
        """Upload the files not yet in the lake's raw mirror (by content hash)."""
        from clearmark.data.etl import load_raw_step

        return load_raw_step(task_settings(), extracted["dataset"], extracted, ts=ts)

    @task(multiple_outputs=False)
    def curate(loaded: dict, ts: str | None = None) -> dict:
        """Build (or find) the curated version: normalised pairs, masks, manifest and rejects."""
        from clearmark.data.etl import curate_step

        return curate_step(task_settings(), loaded["dataset"], ts=ts)

    @task(multiple_outputs=False)
    def validate(curated: dict, ts: str | None = None) -> dict:
        """Check the version with the Great Expectations suite and upload its Data Docs."""
        from clearmark.data.etl import validate_step

        return validate_step(task_settings(), curated["dataset"], curated["version"], ts=ts)

    @task(outlets=[CURATED], multiple_outputs=False)
    def publish(validated: dict, ts: str | None = None, outlet_events=None) -> dict:  # noqa: ANN001 - injected by Airflow
        """Publish the validated version and tell the curated Asset (and so training) which one it is."""
        from clearmark.data.etl import publish_step

        published = publish_step(task_settings(), validated["dataset"], validated["version"], ts=ts)
        # Training reads the version from this event instead of LATEST, which a later publish may move.
        outlet_events[CURATED].extra = {key: published[key] for key in CURATED_EVENT_KEYS}
        return published

    publish(validate(curate(load_raw(extract()))))


clearmark_etl_nightly()
