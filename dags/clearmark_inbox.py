"""
### clearmark inbox -> outbox

Drop `photos.zip` (or `.tar`, `.tar.gz`, `.tgz`, or a folder `photos/` completed by a
`photos/_READY` object) into the **inbox** bucket. Within minutes the **outbox** holds
`photos.zip` cleaned (same format, same folder structure), `photos.zip.report.json` and
`.report.csv` (what happened to every file); the original moves to `inbox/processed/`
(or `inbox/failed/` with an error report).

`wait_for_archives` is a deferrable sensor: waiting holds no worker slot. Each archive is
one mapped task group: `process` (detect with the MLflow `champion`, inpaint, write the
outbox; records the model version used; open the archive's before/after gallery from
its **Review** link) -> `review` (that gallery: thumbnails of the most doubtful images,
where reviewers flag what came back wrong) and `drift_report` (Evidently, against the
training data of that model version, even if `champion` moved since; open it from the
task's **Drift report** link or the **Drift reports** menu) -> `notify_drift` (a warning
when the drift share exceeds `CLEARMARK_DRIFT_SHARE_THRESHOLD`, skipped otherwise; never
a failure).
Run the same without Airflow: `clearmark remove photos.zip cleaned.zip`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.sdk import dag, task, task_group

from clearmark.orchestration import DEFAULT_ARGS, S3_CONN_ID, DriftNotifier, task_settings
from clearmark.settings import get_settings

# Archives at the inbox root, or a folder completed by its _READY marker (not processed/ or failed/).
READY_ITEM = r"^([^/]+\.(zip|tar|tgz|tar\.gz)|[^/]+/_READY)$"


@dag(
    dag_id="clearmark_inbox",
    schedule=timedelta(minutes=5),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clearmark", "removal", "drift"],
    doc_md=__doc__,
)
def clearmark_inbox() -> None:
    wait = S3KeySensor(
        task_id="wait_for_archives",
        bucket_name=get_settings().inbox_bucket,
        bucket_key=READY_ITEM,
        use_regex=True,
        aws_conn_id=S3_CONN_ID,
        deferrable=True,
        poke_interval=15,
        timeout=270,
        soft_fail=True,  # nothing arrived this interval: the run is skipped, not failed
        retries=0,
    )

    @task
    def list_archives() -> list[str]:
        """List the archives and _READY folders waiting at the inbox root."""
        from clearmark.removal.inbox import find_new_archives

        return find_new_archives(task_settings())

    @task_group
    def handle_archive(key: str) -> None:
        @task(max_active_tis_per_dagrun=get_settings().inbox_concurrency, retries=1, multiple_outputs=False)
        def process(key: str) -> dict:
            """Clean one archive with the champion into the outbox; the result records the model version used."""
            from clearmark.removal.inbox import process_inbox_item

            return process_inbox_item(task_settings(), key)

        @task(multiple_outputs=False)
        def drift_report(result: dict) -> dict:
            """Compare the batch's features with the reference of the model version that processed it."""
            from clearmark.drift.report import drift_report_for_batch

            return drift_report_for_batch(task_settings(), result)

        @task
        def notify_drift(summary: dict) -> None:
            """Warn when the batch drifted past the threshold; otherwise show as skipped."""
            from airflow.sdk.exceptions import AirflowSkipException

            from clearmark.drift.report import drift_alert_message

            if not summary.get("alert"):
                raise AirflowSkipException(f"drift share {summary.get('drift_share')} within threshold {summary.get('threshold')}")
            DriftNotifier(drift_alert_message(summary), webhook_url=task_settings().drift_webhook_url).notify({})

        @task(multiple_outputs=False)
        def review(result: dict) -> dict:
            """Write the archive's review page (original | mask | cleaned, most doubtful first) to the reports bucket."""
            from clearmark.removal.review import publish_review

            return publish_review(task_settings(), result)

        result = process(key)
        review(result)
        notify_drift(drift_report(result))

    keys = list_archives()
    wait >> keys
    handle_archive.expand(key=keys)


clearmark_inbox()
