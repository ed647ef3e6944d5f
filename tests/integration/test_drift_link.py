"""The "Drift report" extra link reads the drift task's return value from a real Airflow database."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clearmark.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "plugins"))

import clearmark_drift.links as links  # noqa: E402

pytestmark = pytest.mark.integration

DAG_ID = "clearmark_drift_link_probe"


PROBE_DAG = f"""
import pendulum
from airflow.sdk import dag, task, task_group


@dag(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def probe():
    @task_group
    def handle_archive(name):
        @task
        def drift_report(name):
            return {{"archive": name, "date": "2026-11-22", "drift_share": 0.2, "alert": False, "skipped": False}}

        drift_report(name)

    @task
    def process():
        return {{"archive": "not-a-drift-task.zip", "date": "2026-11-22"}}

    handle_archive.expand(name=["a.zip", "b c.zip"])
    process()


probe()
"""


def test_link_is_built_from_the_drift_task_xcom(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.utils.session import create_session

    monkeypatch.setattr(links, "INBOX_DAG_ID", DAG_ID)
    # dag.test() only runs DAGs that are serialized in the database, so register the probe first.
    (tmp_path / "probe_dag.py").write_text(PROBE_DAG)
    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    bag = BundleDagBag(dag_folder=str(tmp_path), bundle_path=tmp_path, bundle_name="dags-folder")
    sync_bag_to_db(bag, "dags-folder", None)
    run = bag.get_dag(DAG_ID).test()
    link = links.DriftReportLink()

    def url(task_id: str, map_index: int) -> str:
        return link.get_link(None, ti_key=TaskInstanceKey(DAG_ID, task_id, run.run_id, 1, map_index))

    assert url("handle_archive.drift_report", 0) == "/clearmark-drift/reports/2026-11-22/a.zip"
    assert url("handle_archive.drift_report", 1) == "/clearmark-drift/reports/2026-11-22/b%20c.zip"
    assert url("handle_archive.drift_report", 7) == ""  # no such mapped instance
    assert url("process", -1) == ""
