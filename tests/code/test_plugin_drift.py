"""The Airflow plugin's link logic and its discovery by Airflow's plugin manager."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clearmark.settings import REPO_ROOT

PLUGINS = REPO_ROOT / "plugins"
sys.path.insert(0, str(PLUGINS))

from clearmark_drift.links import DRIFT_TASK_NAME, PROCESS_TASK_NAME, drift_report_url, is_inbox_task, review_url  # noqa: E402


@pytest.mark.parametrize(
    ("dag_id", "task_id", "drift", "review"),
    [
        ("clearmark_inbox", "handle_archive.drift_report", True, False),
        ("clearmark_inbox", "drift_report", True, False),
        ("clearmark_inbox", "handle_archive.process", False, True),
        ("clearmark_inbox", "handle_archive.notify_drift", False, False),
        ("other_dag", "drift_report", False, False),
        ("other_dag", "process", False, False),
    ],
)
def test_only_the_inbox_tasks_get_their_links(dag_id: str, task_id: str, drift: bool, review: bool) -> None:
    assert is_inbox_task(dag_id, task_id, DRIFT_TASK_NAME) is drift
    assert is_inbox_task(dag_id, task_id, PROCESS_TASK_NAME) is review


def test_review_link_opens_the_page_of_the_day_the_item_was_processed() -> None:
    result = {"status": "ok", "name": "holiday photos#1.zip", "finished_at": "2026-11-22T23:59:00+00:00"}
    assert review_url(result) == "/clearmark-drift/reviews/2026-11-22/holiday%20photos%231.zip/"
    assert review_url(result, "/airflow") == "/airflow/clearmark-drift/reviews/2026-11-22/holiday%20photos%231.zip/"
    assert review_url({**result, "status": "failed"}) == "" and review_url(None) == "" and review_url({**result, "name": ".."}) == ""


def test_link_points_at_the_report_page_with_a_quoted_archive_name() -> None:
    summary = {"archive": "holiday photos#1.zip", "date": "2026-11-22", "html_key": "drift/2026-11-22/holiday photos#1.zip/report.html"}
    assert drift_report_url(summary) == "/clearmark-drift/reports/2026-11-22/holiday%20photos%231.zip"
    assert drift_report_url(summary, "/airflow/") == "/airflow/clearmark-drift/reports/2026-11-22/holiday%20photos%231.zip"


@pytest.mark.parametrize(
    "summary",
    [None, "text", {}, {"archive": "a.zip", "date": "2026-11-22", "skipped": True}, {"archive": "..", "date": "2026-11-22"}, {"archive": "a.zip", "date": "x"}],
)
def test_no_link_without_a_valid_report(summary: object) -> None:
    assert drift_report_url(summary) == ""


def test_airflow_discovers_the_plugin_from_the_plugins_folder(tmp_path: Path) -> None:
    probe = """
import json
from airflow import plugins_manager
apps, _ = plugins_manager.get_fastapi_plugins()
views, _ = plugins_manager._get_ui_plugins()
print(json.dumps({
    "errors": plugins_manager.get_import_errors(),
    "apps": [(a["name"], a["url_prefix"]) for a in apps],
    "views": [(v["name"], v["href"], v["destination"], v.get("nav_top_level")) for v in views],
    "links": [type(link).__name__ for link in plugins_manager.get_operator_extra_links()],
}))
"""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
    }
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])

    assert found["errors"] == {}
    assert ["Reviews and drift reports", "/clearmark-drift"] in found["apps"]
    assert ["Reviews & drift", "clearmark-drift/", "nav", True] in found["views"]
    assert {"DriftReportLink", "ReviewLink"} <= set(found["links"])
