"""The "Drift report" and "Review" buttons on the inbox DAG's task instances.

Airflow's API server calls ``get_link`` for the task instance shown in the UI; the link
is built from the task's return value, read from Airflow's metadata database: the drift
summary (``archive``, ``date``) of ``drift_report``, the result (``name``,
``finished_at``) of ``process``, whose review the ``review`` task writes for the same
day.  It opens a page of the FastAPI app in ``app.py``.  Other task instances get no
link (empty string).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from airflow.sdk.bases.operatorlink import BaseOperatorLink

from clearmark_drift.app import URL_PREFIX, report_path

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

INBOX_DAG_ID = "clearmark_inbox"
DRIFT_TASK_NAME = "drift_report"  # the task's id inside its task group
PROCESS_TASK_NAME = "process"


def is_inbox_task(dag_id: str, task_id: str, name: str) -> bool:
    """Whether a task instance is the inbox DAG's task ``name`` (in any task group)."""
    return dag_id == INBOX_DAG_ID and task_id.rsplit(".", 1)[-1] == name


def review_url(result: Any, base_path: str = "") -> str:
    """URL of the review page of a ``process`` result, or ``""`` when the item failed or was not processed."""
    from clearmark.removal.review import review_page_path
    from clearmark.storage import validate_report_id

    if not isinstance(result, dict) or result.get("status") == "failed" or not result.get("finished_at"):
        return ""
    archive, review_date = str(result.get("name") or ""), str(result["finished_at"])[:10]
    try:
        validate_report_id(review_date, archive)
    except ValueError:
        return ""
    return f"{base_path.rstrip('/')}{URL_PREFIX}/{review_page_path(review_date, archive)}"


def drift_report_url(summary: Any, base_path: str = "") -> str:
    """URL of a drift summary's report page, or ``""`` when the summary names no report."""
    from clearmark.drift.report import validate_report_id

    if not isinstance(summary, dict) or summary.get("skipped") or not summary.get("archive") or not summary.get("date"):
        return ""
    try:
        validate_report_id(str(summary["date"]), str(summary["archive"]))
    except ValueError:
        return ""
    return f"{base_path.rstrip('/')}{URL_PREFIX}/{report_path(summary['date'], summary['archive'])}"


def _airflow_base_path() -> str:
    """Path part of ``[api] base_url`` (Airflow behind a proxy under a prefix), else empty."""
    from airflow.configuration import conf

    return urlparse(conf.get("api", "base_url", fallback="") or "").path


def _task_return_value(ti_key: TaskInstanceKey) -> Any:
    """The task instance's XCom return value, read from the metadata database (API server side)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value",
                run_id=ti_key.run_id,
                dag_ids=ti_key.dag_id,
                task_ids=ti_key.task_id,
                map_indexes=ti_key.map_index,
            ).with_only_columns(XComModel.value)
        ).first()
    return None if row is None else XComModel.deserialize_value(row)


class DriftReportLink(BaseOperatorLink):
    """Operator extra link "Drift report" for TaskFlow tasks; shown for the inbox DAG's drift task."""

    name = "Drift report"

    @property
    def operators(self) -> list[type]:  # type: ignore[override]
        # TaskFlow (@task) tasks; imported on use so that loading the plugin stays cheap.
        from airflow.providers.standard.decorators.python import _PythonDecoratedOperator

        return [_PythonDecoratedOperator]

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        if not is_inbox_task(ti_key.dag_id, ti_key.task_id, DRIFT_TASK_NAME):
            return ""
        return drift_report_url(_task_return_value(ti_key), _airflow_base_path())


class ReviewLink(DriftReportLink):
    """Operator extra link "Review" for TaskFlow tasks; shown for the inbox DAG's process task."""

    name = "Review"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        if not is_inbox_task(ti_key.dag_id, ti_key.task_id, PROCESS_TASK_NAME):
            return ""
        return review_url(_task_return_value(ti_key), _airflow_base_path())
