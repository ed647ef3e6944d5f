"""Airflow 3 plugin: clearmark's drift report browser and the task's "Drift report" link.

* ``fastapi_apps``: the report browser (``clearmark_drift/app.py``) mounted at
  ``/clearmark-drift`` in the Airflow API server, open to users logged in to Airflow.
* ``external_views``: a top-level "Drift reports" entry in the navigation that shows
  the browser inside the Airflow UI.
* ``operator_extra_links``: "Drift report" on the inbox DAG's ``drift_report`` task
  instances, opening that archive's report.

Loading it imports FastAPI and clearmark's settings only; pandas, Evidently and boto3
are imported when a page is first requested.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from clearmark_drift.app import URL_PREFIX, create_app
from clearmark_drift.links import DriftReportLink


class ClearmarkDriftPlugin(AirflowPlugin):
    """Drift report browser and task link."""

    name = "clearmark_drift"
    fastapi_apps = [{"app": create_app(require_login=True), "url_prefix": URL_PREFIX, "name": "Drift reports"}]
    external_views = [
        {
            "name": "Drift reports",
            "href": URL_PREFIX.lstrip("/") + "/",  # relative: works under a base_url prefix
            "destination": "nav",
            "nav_top_level": True,  # its own entry in the side bar, one click from any page
            "url_route": "clearmark-drift",
        }
    ]
    operator_extra_links = [DriftReportLink()]
