"""Airflow 3 plugin: clearmark's review and drift report browser and the tasks' links.

* ``fastapi_apps``: the browser (``clearmark_drift/app.py``) mounted at
  ``/clearmark-drift`` in the Airflow API server, open to users logged in to Airflow:
  each archive's review page (before/after pictures, reviewers' flags) and drift report.
* ``external_views``: a top-level "Reviews & drift" entry in the navigation that shows
  the browser inside the Airflow UI.
* ``operator_extra_links``: "Review" on the inbox DAG's ``process`` task instances and
  "Drift report" on its ``drift_report`` ones, opening that archive's page.

Loading it imports FastAPI and clearmark's settings only; pandas, Evidently and boto3
are imported when a page is first requested.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from clearmark_drift.app import URL_PREFIX, create_app
from clearmark_drift.links import DriftReportLink, ReviewLink


class ClearmarkDriftPlugin(AirflowPlugin):
    """Review and drift report browser and task links."""

    name = "clearmark_drift"
    fastapi_apps = [{"app": create_app(require_login=True), "url_prefix": URL_PREFIX, "name": "Reviews and drift reports"}]
    external_views = [
        {
            "name": "Reviews & drift",
            "href": URL_PREFIX.lstrip("/") + "/",  # relative: works under a base_url prefix
            "destination": "nav",
            "nav_top_level": True,  # its own entry in the side bar, one click from any page
            "url_route": URL_PREFIX.strip("/"),
        }
    ]
    operator_extra_links = [ReviewLink(), DriftReportLink()]
