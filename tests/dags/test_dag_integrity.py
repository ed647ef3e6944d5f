"""DAG integrity: every DAG file imports cleanly, stays thin, and carries its metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clearmark.bench.platform import HEAVY_MODULES

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(DAGS_DIR.glob("*.py"))
EXPECTED_DAGS = {"clearmark_etl_nightly", "clearmark_train", "clearmark_inbox", "clearmark_review_daily"}
HEAVY = list(HEAVY_MODULES)  # one list, shared with the parse benchmark


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED_DAGS


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_nothing_heavy(dag_file: Path) -> None:
    # A fresh interpreter, so modules other tests imported do not hide a heavy import.
    code = (
        "import json, runpy, sys; runpy.run_path(sys.argv[1]); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(dag_file)], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_dag_metadata(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag.doc_md and len(dag.doc_md) > 100
    assert "clearmark" in dag.tags and len(dag.tags) >= 2
    assert dag.catchup is False
    for task in dag.tasks:
        assert task.owner == "clearmark"
    assert all(t.retries >= 1 for t in dag.tasks if t.task_id != "wait_for_archives")
    assert all(t.retry_exponential_backoff for t in dag.tasks)


def test_etl_pipeline_order_and_asset(dagbag) -> None:
    dag = dagbag.dags["clearmark_etl_nightly"]
    chain = ["extract", "load_raw", "curate", "validate", "publish"]
    for upstream, downstream in zip(chain, chain[1:]):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    assert dag.schedule == "0 2 * * *"
    outlets = dag.get_task("publish").outlets
    assert [o.uri for o in outlets] == ["s3://lake/curated/synthetic"]


def test_train_is_scheduled_on_the_curated_asset(dagbag) -> None:
    dag = dagbag.dags["clearmark_train"]
    assert "clearmark_curated_synthetic" in str(dag.timetable.asset_condition)
    branches = dag.get_task("decide").downstream_task_ids
    assert branches == {"promote", "keep_champion"}


def test_train_params_render_a_validated_form(dagbag) -> None:
    from airflow.sdk.definitions.param import ParamsDict

    dag = dagbag.dags["clearmark_train"]
    params = ParamsDict(dict(dag.params.items()))
    params.validate()  # the defaults are valid
    for name, bad in [
        ("epochs", 0), ("image_size", 100), ("detect_side", "large"), ("detect_side", "-64"), ("encoder", "no-such-encoder"),
        ("dataset_version", "v1"), ("learning_rate", -1), ("learning_rate", 0), ("decoder_channels", "64,32"), ("max_minutes", 0),
    ]:  # fmt: skip
        broken = ParamsDict(dict(dag.params.items()))
        with pytest.raises(Exception):
            broken[name] = bad
            broken.validate()


def test_inbox_uses_a_deferrable_sensor_and_mapped_group(dagbag) -> None:
    dag = dagbag.dags["clearmark_inbox"]
    sensor = dag.get_task("wait_for_archives")
    assert sensor.deferrable is True and sensor.use_regex is True
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    process = dag.get_task("handle_archive.process")
    assert process.max_active_tis_per_dagrun >= 1
    assert isinstance(process.task_group, MappedTaskGroup)
    assert dag.get_task("handle_archive.notify_drift").upstream_task_ids == {"handle_archive.drift_report"}
    assert dag.get_task("handle_archive.review").upstream_task_ids == {"handle_archive.process"}
