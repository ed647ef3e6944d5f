"""End-to-end `dag.test()` of clearmark_etl_nightly on the real SeaweedFS fixture."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from clearmark.settings import Settings, get_settings
from clearmark.storage import ObjectStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "clearmark_etl_nightly.py"


def write_bad_inputs(folder: Path) -> None:
    """A `pairs` source holding one good pair and the kinds of input curation must reject."""
    from PIL import Image

    (folder / "clean").mkdir(parents=True)
    (folder / "watermarked").mkdir()
    clean = Image.new("RGB", (64, 64), (120, 130, 140))
    clean.save(folder / "clean" / "good.png")
    marked = clean.copy()
    marked.paste((255, 255, 255), (10, 10, 40, 20))
    marked.save(folder / "watermarked" / "good.png")
    for name in ("corrupt", "empty", "unpaired"):
        clean.save(folder / "clean" / f"{name}.png")
    buffer = io.BytesIO()
    marked.save(buffer, format="PNG")
    (folder / "watermarked" / "corrupt.png").write_bytes(buffer.getvalue()[:80])  # truncated
    (folder / "watermarked" / "empty.png").write_bytes(b"")
    (folder / "watermarked" / "notes.txt").write_text("not an image")


@pytest.fixture
def etl_config(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A dataset of 40 synthetic pairs plus a folder of bad inputs, and thresholds that fit its size."""
    write_bad_inputs(tmp_path / "local")
    sources = {
        "datasets": {
            "tiny": {
                "enabled": True,
                "sources": [
                    {"name": "tiny-synth", "kind": "synthetic", "layout": "synthetic", "options": {"count": 40, "seed": 3, "size": 64}},
                    {"name": "tiny-local", "kind": "local", "layout": "pairs", "path": str(tmp_path / "local")},
                ],
            }
        }
    }
    quality = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "quality.yaml").read_text())
    quality["datasets"] = {"tiny": {"min_rows": 20, "split_tolerance": 0.2}}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(sources))
    (tmp_path / "quality.yaml").write_text(yaml.safe_dump(quality))
    monkeypatch.setenv("CLEARMARK_SOURCES_FILE", str(tmp_path / "sources.yaml"))
    monkeypatch.setenv("CLEARMARK_QUALITY_FILE", str(tmp_path / "quality.yaml"))
    monkeypatch.setenv("CLEARMARK_DATASET", "tiny")
    get_settings.cache_clear()
    return "tiny"


def run_etl_dag() -> tuple[str, dict]:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAG_FILE)).dags["clearmark_etl_nightly"]
    run = dag.test(run_conf={"dataset": "tiny"})
    outputs = {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in run.get_task_instances()}
    return run.state, outputs


def test_etl_dag_lands_a_validated_version_and_is_idempotent(airflow_db: Path, etl_config: str, store: ObjectStore, settings: Settings) -> None:
    import pandas as pd

    state, outputs = run_etl_dag()
    assert state == "success", outputs

    lake = settings.lake_bucket
    raw_keys = {o.key for o in store.list(lake, "raw/")}
    assert "raw/tiny-synth/_index.json" in raw_keys and "raw/tiny-local/_index.json" in raw_keys
    assert len([k for k in raw_keys if k.startswith("raw/tiny-synth/watermarked/")]) == 40

    version = outputs["publish"]["version"]
    prefix = f"curated/tiny/{version}/"
    manifest = pd.read_parquet(io.BytesIO(store.get_bytes(lake, prefix + "manifest.parquet")))
    rejects = pd.read_parquet(io.BytesIO(store.get_bytes(lake, prefix + "rejects.parquet")))
    assert len(manifest) == 41  # 40 synthetic + the good local pair
    assert set(manifest["split"]) <= {"train", "val", "test"}
    assert {"corrupt", "empty", "unpaired", "notes"} <= {Path(p).stem for p in rejects["path"]}
    assert rejects["reason"].notna().all()

    validation = json.loads(store.get_bytes(lake, prefix + "validation.json"))
    assert validation["success"] is True
    published = json.loads(store.get_bytes(lake, prefix + "_PUBLISHED.json"))
    assert published["version"] == version and published["rows"] == 41
    assert store.get_bytes(lake, "curated/tiny/LATEST").decode().strip() == version
    assert store.exists(settings.reports_bucket, f"data-docs/tiny/{version}/index.html")
    assert outputs["load_raw"]["bytes_uploaded"] > 0

    # The Asset that schedules training got an event for this version.
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = [e for e in session.scalars(select(AssetEvent)) if e.asset.uri == f"s3://{lake}/curated/tiny"]
    assert events and events[-1].extra["version"] == version

    # A re-run with unchanged sources uploads nothing and re-uses the version.
    state, again = run_etl_dag()
    assert state == "success"
    assert again["load_raw"]["bytes_uploaded"] == 0
    assert again["publish"]["version"] == version
