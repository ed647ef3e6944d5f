"""Platform benchmarks against the real SeaweedFS: the ETL twice in scratch buckets, DAG parsing in fresh interpreters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearmark.bench.platform import measure_dag_parse, measure_etl
from clearmark.settings import REPO_ROOT, Settings
from clearmark.storage import ObjectStore

pytestmark = pytest.mark.integration

IMAGES, SIZE = 8, 64


def _bucket_names(store: ObjectStore) -> set[str]:
    return {bucket["Name"] for bucket in store.client.list_buckets()["Buckets"]}


def _contents(store: ObjectStore, bucket: str) -> dict[str, str]:
    return {info.key: info.etag for info in store.list(bucket)}


@pytest.fixture
def deleted(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, bytes]]:
    """What each bucket held when the benchmark deleted it: ``{bucket: {key: bytes}}``."""
    seen: dict[str, dict[str, bytes]] = {}
    delete_bucket = ObjectStore.delete_bucket

    def record_then_delete(self: ObjectStore, name: str) -> None:
        seen[name] = {info.key: self.get_bytes(name, info.key) for info in self.list(name)}
        delete_bucket(self, name)

    monkeypatch.setattr(ObjectStore, "delete_bucket", record_then_delete)
    return seen


def test_etl_publishes_in_scratch_buckets_and_the_rerun_uploads_nothing(
    settings: Settings, store: ObjectStore, tmp_path: Path, deleted: dict[str, dict[str, bytes]]
) -> None:
    store.put_bytes(settings.lake_bucket, "curated/synthetic/LATEST", b"v-users-own")
    before = {bucket: _contents(store, bucket) for bucket in (settings.lake_bucket, settings.reports_bucket)}

    figures = measure_etl(settings, tmp_path / "work", images=IMAGES, size=SIZE, progress=False)

    dataset, version = figures["dataset"], figures["version"]
    assert json.loads(json.dumps(figures)) == figures
    assert (figures["rows"], figures["rejects"], figures["validation_success"]) == (IMAGES, 0, True)
    # The source is the generated clean/, watermarked/ and masks/ PNGs, all uploaded by the first run only.
    assert figures["source_files"] == 3 * IMAGES
    assert figures["first_run_bytes_uploaded"] == figures["source_bytes"] > 0
    assert figures["rerun_bytes_uploaded"] == 0 and figures["rerun_same_version"] is True
    assert list(figures["first_run_steps_s"]) == list(figures["rerun_steps_s"]) == ["extract", "load_raw", "curate", "validate", "publish"]
    assert 0 < sum(figures["first_run_steps_s"].values()) <= figures["first_run_s"] + 0.01
    assert figures["rerun_share"] == pytest.approx(figures["rerun_s"] / figures["first_run_s"], abs=1e-3)
    assert figures["mb_per_s"] == pytest.approx(figures["source_bytes"] / 1e6 / figures["first_run_s"], rel=0.01, abs=1e-3)

    # The scratch buckets held a published, validated version with its Data Docs, and are gone now.
    lake, reports = deleted[figures["buckets"]["lake"]], deleted[figures["buckets"]["reports"]]
    assert lake[f"curated/{dataset}/LATEST"].decode() == version
    assert json.loads(lake[f"curated/{dataset}/{version}/_PUBLISHED.json"])["rows"] == IMAGES
    assert json.loads(lake[f"curated/{dataset}/{version}/validation.json"])["success"] is True
    assert figures["data_docs_prefix"] == f"s3://{figures['buckets']['reports']}/data-docs/{dataset}/{version}/"
    assert f"data-docs/{dataset}/{version}/index.html" in reports
    assert not set(figures["buckets"].values()) & _bucket_names(store)

    # The configured buckets were never written.
    assert {bucket: _contents(store, bucket) for bucket in before} == before


def test_etl_deletes_its_buckets_when_a_step_fails(
    settings: Settings, store: ObjectStore, tmp_path: Path, deleted: dict[str, dict[str, bytes]]
) -> None:
    buckets = _bucket_names(store)
    without_gx = settings.model_copy(update={"gx_root": tmp_path / "no-gx-project"})

    with pytest.raises(Exception, match="No Great Expectations project"):
        measure_etl(without_gx, tmp_path / "work", images=IMAGES, size=SIZE, progress=False)

    (lake,) = [objects for name, objects in deleted.items() if name.endswith("-lake")]
    assert any(key.endswith("manifest.parquet") for key in lake)  # it failed after curating, with data in its buckets
    assert len(deleted) == 2 and _bucket_names(store) == buckets


def test_dag_parse_of_the_repository_dags_loads_nothing_heavy() -> None:
    figures = measure_dag_parse(repeats=1)

    assert figures["dags_folder"] == str(REPO_ROOT / "dags")
    assert list(figures["dags"]) == sorted(path.name for path in (REPO_ROOT / "dags").glob("*.py"))
    assert figures["import_airflow_sdk_s"] > 0
    for entry in figures["dags"].values():
        assert entry["sdk_import_s"] > 0 and entry["extra_s"] > 0
        assert entry["ratio"] == pytest.approx((entry["sdk_import_s"] + entry["extra_s"]) / entry["sdk_import_s"], abs=0.02)
        assert entry["heavy_modules"] == []
    assert figures["heavy_modules"] == []
    assert json.loads(json.dumps(figures)) == figures


def test_dag_parse_reports_heavy_imports_and_names_a_broken_file(tmp_path: Path) -> None:
    heavy = tmp_path / "heavy"
    heavy.mkdir()
    (heavy / "fat_dag.py").write_text("import numpy\n")
    figures = measure_dag_parse(heavy, repeats=2)
    assert list(figures["dags"]) == ["fat_dag.py"]
    assert figures["dags"]["fat_dag.py"]["heavy_modules"] == figures["heavy_modules"] == ["numpy"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "broken_dag.py").write_text("raise ImportError('no such operator')\n")
    with pytest.raises(RuntimeError, match=r"(?s)broken_dag\.py.*no such operator"):
        measure_dag_parse(broken, repeats=1)
