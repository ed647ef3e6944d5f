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
    @task
    def extract(params: dict | None = None, ts: str | None = None) -> dict:
        from clearmark.data.etl import extract_step

        export_kaggle_credentials()
        return extract_step(task_settings(), params["dataset"], ts=ts)

    @task
    def load_raw(extracted: dict, ts: str | None = None) -> dict:
        from clearmark.data.etl import load_raw_step

        return load_raw_step(task_settings(), extracted["dataset"], extracted, ts=ts)

    @task
    def curate(loaded: dict, ts: str | None = None) -> dict:
        from clearmark.data.etl import curate_step

        return curate_step(task_settings(), loaded["dataset"], ts=ts)

    @task
    def validate(curated: dict, ts: str | None = None) -> dict:
        from clearmark.data.etl import validate_step

        return validate_step(task_settings(), curated["dataset"], curated["version"], ts=ts)

    @task(outlets=[CURATED])
    def publish(validated: dict, ts: str | None = None, outlet_events=None) -> dict:  # noqa: ANN001 - injected by Airflow
        from clearmark.data.etl import publish_step

        published = publish_step(task_settings(), validated["dataset"], validated["version"], ts=ts)
        outlet_events[CURATED].extra = {"dataset": published["dataset"], "version": published["version"]}
        return published

    publish(validate(curate(load_raw(extract()))))


clearmark_etl_nightly()
