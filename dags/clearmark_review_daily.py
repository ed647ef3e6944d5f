"""
### clearmark field quality, daily

Reviewers flag images on the review pages of the inbox archives (*watermark left*,
*image damaged*, *good*; the **Reviews & drift** menu). Once a day `field_quality`
counts the latest flag of every image per model version that cleaned it and sets the
counts as tags of that MLflow model version: `field_flag_rate` (share of flagged images
that came back wrong), `field_flags_<flag>` and `field_flagged_images`.
Run the same without Airflow: `clearmark field-quality`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from clearmark.orchestration import DEFAULT_ARGS, task_settings


@dag(
    dag_id="clearmark_review_daily",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clearmark", "removal", "review"],
    doc_md=__doc__,
)
def clearmark_review_daily() -> None:
    @task(multiple_outputs=False)
    def field_quality() -> dict:
        """Count reviewers' flags per model version and tag each registered MLflow model version with them."""
        from clearmark.removal.field_quality import log_field_quality

        return log_field_quality(task_settings())

    field_quality()


clearmark_review_daily()
