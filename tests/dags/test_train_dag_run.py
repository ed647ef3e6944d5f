"""`dag.test()` of clearmark_train: each run trains the dataset version its Asset event carries,
fine-tuning the champion version it pinned when it started.

Two ETL publishes in a row produce two real curated-Asset events; a train run triggered by
the first must train the first version although LATEST already names the second.  The
trainer is a stand-in that prints the arguments it got, so no model is trained.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from clearmark.model.train_config import TrainingError
from clearmark.settings import Settings, get_settings
from clearmark.storage import ObjectStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def race_dataset(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Dataset `race` (the DAGs' default), fed by one synthetic source; returns its sources file.

    Its own name: an Asset is known by name in the metadata database that the DAG tests share,
    and each test's lake bucket (so the Asset's URI) differs.
    """
    quality = yaml.safe_load((DAGS.parent / "config" / "quality.yaml").read_text())
    quality["datasets"] = {"race": {"min_rows": 10, "split_tolerance": 0.3}}
    (tmp_path / "quality.yaml").write_text(yaml.safe_dump(quality))
    monkeypatch.setenv("CLEARMARK_QUALITY_FILE", str(tmp_path / "quality.yaml"))
    monkeypatch.setenv("CLEARMARK_SOURCES_FILE", str(tmp_path / "sources.yaml"))
    monkeypatch.setenv("CLEARMARK_DATASET", "race")
    monkeypatch.setenv("CLEARMARK_TRAIN_RUNNER", "local")
    # The stand-in trainer: `clearmark train ...` prints its arguments as its last line, where the real one prints its summary.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "clearmark").write_text('#!/bin/sh\necho "$@"\n')
    (bin_dir / "clearmark").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    get_settings.cache_clear()
    return tmp_path / "sources.yaml"


def publish(sources_file: Path, count: int) -> str:
    """Run the ETL DAG once with ``count`` synthetic pairs; returns the version it published."""
    from airflow.dag_processing.dagbag import DagBag

    source = {"name": "race-synth", "kind": "synthetic", "layout": "synthetic", "options": {"count": count, "seed": 5, "size": 64}}
    sources_file.write_text(yaml.safe_dump({"datasets": {"race": {"sources": [source]}}}))
    run = DagBag(dag_folder=str(DAGS / "clearmark_etl_nightly.py")).dags["clearmark_etl_nightly"].test(run_conf={"dataset": "race"})
    assert run.state == "success"
    return run.get_task_instances()[0].xcom_pull(task_ids="publish")["version"]


def train_run(monkeypatch: pytest.MonkeyPatch, event_id: int | None) -> dict:
    """One clearmark_train run (consuming the Asset event ``event_id``, or manual); XComs of its first two tasks."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models import dagrun
    from airflow.models.asset import AssetEvent

    create = dagrun.get_or_create_dagrun

    def create_with_event(**kwargs):  # noqa: ANN003, ANN202 - dag.test()'s own call
        # dag.test() creates a manual run; the scheduler would attach the events that triggered it.
        run = create(**kwargs)
        if event_id is not None:
            run.consumed_asset_events.append(kwargs["session"].get(AssetEvent, event_id))
            kwargs["session"].commit()
        return run

    monkeypatch.setattr(dagrun, "get_or_create_dagrun", create_with_event)
    dag = DagBag(dag_folder=str(DAGS / "clearmark_train.py")).dags["clearmark_train"]
    run = dag.test(mark_success_pattern="^(gate|decide|promote|keep_champion)$")
    assert run.state == "success"
    ti = run.get_task_instances()[0]
    return {"inputs": ti.xcom_pull(task_ids="training_inputs"), "trainer_argv": ti.xcom_pull(task_ids="train").split()}


def version_argument(argv: list[str]) -> str:
    return argv[argv.index("--dataset-version") + 1]


def test_two_publishes_in_a_row_train_two_versions(
    airflow_db: Path, race_dataset: Path, store: ObjectStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from clearmark.model.promotion import ensure_baseline_champion

    champion = ensure_baseline_champion(settings)  # the shipped recipe fine-tunes the champion

    def curated_events() -> list[tuple[int, dict]]:
        with create_session() as session:
            return [(e.id, e.extra) for e in session.scalars(select(AssetEvent).order_by(AssetEvent.id)) if e.asset.name == "clearmark_curated_race"]

    first, second = publish(race_dataset, 24), publish(race_dataset, 30)
    assert first != second
    events = curated_events()
    assert [extra["version"] for _, extra in events] == [first, second]
    assert events[0][1]["rows"] == 24 and 0 <= events[0][1]["reject_share"] <= 1  # the event describes the version

    # Both publishes happened before training started: LATEST names the second version.
    for (event_id, _), version in zip(events, (first, second), strict=True):
        trained = train_run(monkeypatch, event_id)
        assert trained["inputs"]["dataset_version"] == version
        assert version_argument(trained["trainer_argv"]) == version
        assert trained["trainer_argv"][trained["trainer_argv"].index("--dataset") + 1] == "race"
        pinned = f"models:/{settings.registered_model}/{champion}"  # the version, not the alias that may move
        assert trained["inputs"]["init_from"] == pinned == trained["trainer_argv"][trained["trainer_argv"].index("--init-from") + 1]

    # A manual run without an event reads LATEST once, and records what it read.
    manual = train_run(monkeypatch, None)
    assert manual["inputs"]["dataset_version"] == second == version_argument(manual["trainer_argv"])
    assert store.get_bytes(store.settings.lake_bucket, "curated/race/LATEST").decode().strip() == second


def test_without_a_champion_to_fine_tune_the_run_fails_and_says_what_to_do(settings: Settings) -> None:
    from clearmark.orchestration import train_params, training_inputs

    params = {name: param.value for name, param in train_params(settings).items()}
    assert params["init_from"] == "champion"
    with pytest.raises(TrainingError, match=r"has no alias 'champion'.*clearmark register-baseline.*init_from: null"):
        training_inputs(settings, {**params, "dataset_version": "v0123456789ab"}, [], run_name="no-champion")
