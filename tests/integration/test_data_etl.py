"""Curation, publishing, the reader API and the ETL steps against a real SeaweedFS."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clearmark.data.catalog import fetch_version, latest_version, list_published, published_versions, read_manifest
from clearmark.data.curate import curate
from clearmark.data.etl import DataValidationError, publish_step, run_etl
from clearmark.data.layout import CurationError, DatasetNotFoundError, version_prefix
from clearmark.data.manifest import manifest_sha256
from clearmark.data.publish import publish
from clearmark.data.quality import VALIDATION_FILE
from clearmark.data.raw import load_raw
from clearmark.data.sources import SourceSpec
from clearmark.settings import Settings
from clearmark.storage import ObjectStore
from tests.support.curation_inputs import EXPECTED_REJECTS, accepted_stems, build_pairs_source

pytestmark = pytest.mark.integration

DATASET = "pairs-test"


def _lake_parquet(store: ObjectStore, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.get_bytes(store.settings.lake_bucket, key)))


@pytest.fixture
def pairs_source(store: ObjectStore, tmp_path: Path) -> SourceSpec:
    """The good-and-bad pairs folder, loaded into the lake as raw source ``pairs``."""
    root = build_pairs_source(tmp_path / "pairs")
    load_raw(store, "pairs", root, progress=False)
    return SourceSpec(name="pairs", kind="local", layout="pairs", path=root)


def test_curate_writes_manifest_rejects_and_images_and_is_idempotent(
    settings: Settings, store: ObjectStore, pairs_source: SourceSpec
) -> None:
    lenient = settings.model_copy(update={"max_reject_ratio": 0.5})
    result = curate(lenient, store, DATASET, [pairs_source], progress=False)
    assert (result.rows, result.rejects, result.reused) == (len(accepted_stems()), len(EXPECTED_REJECTS), False)
    assert result.reject_ratio == pytest.approx(len(EXPECTED_REJECTS) / (len(accepted_stems()) + len(EXPECTED_REJECTS)))

    prefix = version_prefix(DATASET, result.version)
    manifest = _lake_parquet(store, prefix + "manifest.parquet")
    assert list(manifest["id"]) == [f"pairs/{stem}" for stem in accepted_stems()]
    rejects = _lake_parquet(store, prefix + "rejects.parquet")
    assert dict(zip(rejects["path"], rejects["reason"])) == EXPECTED_REJECTS
    keys = {info.key[len(prefix) :] for info in store.list(settings.lake_bucket, prefix)}
    for row in manifest.itertuples():
        assert {row.watermarked_key, row.clean_key, row.mask_key} <= keys

    # Same raw inputs, even with an empty local cache: same version, found instead of rebuilt.
    for path in sorted(settings.cache_dir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    again = curate(lenient, store, DATASET, [pairs_source], progress=False)
    assert (again.version, again.rows, again.reused) == (result.version, result.rows, True)

    # A different curation parameter is a different version.
    stricter = pairs_source.model_copy(update={"options": {"mask_threshold": 60}})
    assert curate(lenient, store, DATASET, [stricter], progress=False).version != result.version


def test_too_many_rejects_fail_after_recording_them(settings: Settings, store: ObjectStore, pairs_source: SourceSpec) -> None:
    strict = settings.model_copy(update={"max_reject_ratio": 0.2})
    with pytest.raises(CurationError, match=r"CLEARMARK_MAX_REJECT_RATIO=20%.*rejects\.parquet") as error:
        curate(strict, store, DATASET, [pairs_source], progress=False)
    (version_folder,) = store.list_prefixes(settings.lake_bucket, f"curated/{DATASET}/")
    assert len(_lake_parquet(store, version_folder + "rejects.parquet")) == len(EXPECTED_REJECTS)
    assert not store.exists(settings.lake_bucket, version_folder + "manifest.parquet")
    assert "truncated" in str(error.value)


def test_curate_needs_raw_data_first(settings: Settings, store: ObjectStore, tmp_path: Path) -> None:
    missing = SourceSpec(name="never-loaded", kind="local", layout="pairs", path=tmp_path)
    with pytest.raises(CurationError, match="clearmark etl load-raw"):
        curate(settings, store, DATASET, [missing], progress=False)


def test_unpublished_version_is_invisible_until_published(
    settings: Settings, store: ObjectStore, pairs_source: SourceSpec
) -> None:
    result = curate(settings.model_copy(update={"max_reject_ratio": 0.5}), store, DATASET, [pairs_source], progress=False)
    assert published_versions(store, DATASET) == []
    with pytest.raises(DatasetNotFoundError, match=rf"{DATASET}.*clearmark etl run"):
        latest_version(store, DATASET)
    with pytest.raises(DatasetNotFoundError, match="not published"):
        read_manifest(store, DATASET, result.version)
    with pytest.raises(DatasetNotFoundError, match="not published"):
        fetch_version(store, DATASET, result.version, progress=False)
    with pytest.raises(DataValidationError, match="has not been run"):
        publish_step(settings, DATASET, result.version)

    digest = manifest_sha256(store, DATASET, result.version)
    with pytest.raises(CurationError, match="differs from the validated"):
        publish(store, DATASET, result.version, result.rows, "0" * 64)
    marker = publish(store, DATASET, result.version, result.rows, digest, logical_date="2026-11-22T00:00:00+00:00")
    assert marker["rows"] == result.rows and marker["logical_date"] == "2026-11-22T00:00:00+00:00"
    assert published_versions(store, DATASET) == [result.version]
    assert latest_version(store, DATASET) == result.version
    assert list_published(store) == [
        {"dataset": DATASET, "version": result.version, "rows": result.rows, "created_at": marker["created_at"],
         "logical_date": marker["logical_date"], "latest": True}
    ]  # fmt: skip
    assert publish(store, DATASET, result.version, result.rows, digest)["created_at"] == marker["created_at"]

    local = fetch_version(store, DATASET, result.version, progress=False)
    pd.testing.assert_frame_equal(local.manifest, read_manifest(store, DATASET, result.version))
    assert local.manifest_sha256 == digest
    for row in local.manifest.itertuples():
        for key in (row.watermarked_key, row.clean_key, row.mask_key):
            assert (local.root / key).is_file()
    assert (local.root / "rejects.parquet").is_file()
    stamps = {path: path.stat().st_mtime_ns for path in local.root.rglob("*") if path.is_file()}
    fetch_version(store, DATASET, result.version, progress=False)  # already there: nothing downloaded again
    assert {path: path.stat().st_mtime_ns for path in local.root.rglob("*") if path.is_file()} == stamps


def test_publish_step_reports_rows_and_reject_share_for_the_asset_event(
    settings: Settings, store: ObjectStore, pairs_source: SourceSpec
) -> None:
    result = curate(settings.model_copy(update={"max_reject_ratio": 0.5}), store, DATASET, [pairs_source], progress=False)
    # Validation has its own tests (tests/data); publishing only needs it to have passed.
    store.put_bytes(settings.lake_bucket, version_prefix(DATASET, result.version) + VALIDATION_FILE, json.dumps({"success": True}).encode())

    published = publish_step(settings, DATASET, result.version, ts="2026-11-22T02:00:00+00:00")

    accepted, rejected = len(accepted_stems()), len(EXPECTED_REJECTS)
    assert (published["dataset"], published["version"], published["rows"]) == (DATASET, result.version, accepted)
    assert published["reject_share"] == pytest.approx(rejected / (accepted + rejected))
    assert latest_version(store, DATASET) == result.version


def test_fetch_version_with_select_downloads_only_the_chosen_rows(settings: Settings, store: ObjectStore, pairs_source: SourceSpec) -> None:
    result = curate(settings.model_copy(update={"max_reject_ratio": 0.5}), store, DATASET, [pairs_source], progress=False)
    publish(store, DATASET, result.version, result.rows, manifest_sha256(store, DATASET, result.version))

    sample = fetch_version(store, DATASET, result.version, select=lambda manifest: manifest.tail(2), progress=False)

    assert sample.manifest["id"].tolist() == [f"pairs/{stem}" for stem in accepted_stems()[-2:]]
    assert sample.location == f"s3://{settings.lake_bucket}/{version_prefix(DATASET, result.version).rstrip('/')}"
    expected = {"manifest.parquet"} | {key for row in sample.manifest.itertuples() for key in (row.watermarked_key, row.clean_key, row.mask_key)}
    assert {path.relative_to(sample.root).as_posix() for path in sample.root.rglob("*") if path.is_file()} == expected
    assert len(list(sample.pairs(sample.manifest))) == 2


def _synthetic_config(settings: Settings, tmp_path: Path, min_rows: int) -> Settings:
    """Settings pointing at a sources file with one small synthetic dataset and matching GX thresholds."""
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {"datasets": {"synth-test": {"sources": [
                {"name": "synth-small", "kind": "synthetic", "layout": "synthetic", "options": {"count": 40, "seed": 7, "size": 64}}
            ]}}}  # fmt: skip
        )
    )
    quality = yaml.safe_load((settings.quality_file).read_text())
    quality["datasets"] = {"synth-test": {"min_rows": min_rows}}
    quality_file = tmp_path / "quality.yaml"
    quality_file.write_text(yaml.safe_dump(quality))
    return settings.model_copy(update={"sources_file": sources, "quality_file": quality_file})


@pytest.mark.slow
def test_run_etl_publishes_once_and_reruns_upload_nothing(settings: Settings, store: ObjectStore, tmp_path: Path) -> None:
    configured = _synthetic_config(settings, tmp_path, min_rows=20)
    first = run_etl(configured, "synth-test", ts="2026-11-22T02:00:00+00:00")
    assert first["rows"] == 40 and first["rejects"] == 0 and first["validation_success"] is True
    assert first["asset_uri"] == f"s3://{settings.lake_bucket}/curated/synth-test"
    assert first["bytes_uploaded"] > 0
    assert latest_version(store, "synth-test") == first["version"]
    validation = json.loads(store.get_bytes(settings.lake_bucket, version_prefix("synth-test", first["version"]) + "validation.json"))
    assert validation["success"] is True
    assert any(info.key.endswith("index.html") for info in store.list(settings.reports_bucket, f"data-docs/synth-test/{first['version']}/"))

    second = run_etl(configured, "synth-test", ts="2026-11-23T02:00:00+00:00")
    assert (second["version"], second["bytes_uploaded"]) == (first["version"], 0)
    assert published_versions(store, "synth-test") == [first["version"]]


@pytest.mark.slow
def test_failed_validation_publishes_nothing(settings: Settings, store: ObjectStore, tmp_path: Path) -> None:
    configured = _synthetic_config(settings, tmp_path, min_rows=10_000)
    with pytest.raises(DataValidationError, match="failed validation; it is not published"):
        run_etl(configured, "synth-test")
    assert published_versions(store, "synth-test") == []
    assert not store.exists(settings.lake_bucket, "curated/synth-test/LATEST")


def test_cli_runs_the_steps_and_explains_failures(
    settings: Settings, store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from clearmark.cli import app
    from clearmark.settings import get_settings

    runner = CliRunner()
    synth = runner.invoke(app, ["synth", "--out", str(tmp_path / "synth"), "--count", "3", "--seed", "1", "--size", "64"])
    assert synth.exit_code == 0, synth.output
    assert json.loads(synth.stdout)["count"] == 3
    assert len(list((tmp_path / "synth" / "masks").glob("*.png"))) == 3

    root = build_pairs_source(tmp_path / "pairs")
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"datasets": {"cli-test": {"sources": [{"name": "cli-pairs", "kind": "local", "layout": "pairs", "path": str(root)}]}}}))
    monkeypatch.setenv("CLEARMARK_SOURCES_FILE", str(sources))
    monkeypatch.setenv("CLEARMARK_MAX_REJECT_RATIO", "0.5")
    get_settings.cache_clear()

    loaded = runner.invoke(app, ["etl", "load-raw", "--dataset", "cli-test", "--ts", "2026-11-22T02:00:00+00:00"])
    assert loaded.exit_code == 0, loaded.output
    summary = json.loads(loaded.stdout)
    assert summary["bytes_uploaded"] > 0 and summary["ts"] == "2026-11-22T02:00:00+00:00"

    curated = runner.invoke(app, ["etl", "curate", "--dataset", "cli-test"])
    assert curated.exit_code == 0, curated.output
    version = json.loads(curated.stdout)["version"]
    assert store.exists(settings.lake_bucket, version_prefix("cli-test", version) + "manifest.parquet")

    refused = runner.invoke(app, ["etl", "publish", "--dataset", "cli-test", "--version", version])
    assert refused.exit_code == 1
    assert "validation has not been run" in refused.stderr and "clearmark etl validate" in refused.stderr
    listed = runner.invoke(app, ["datasets"])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []

    monkeypatch.setenv("CLEARMARK_MAX_REJECT_RATIO", "0.1")
    get_settings.cache_clear()
    too_many = runner.invoke(app, ["etl", "curate", "--dataset", "cli-test"])
    assert too_many.exit_code == 1 and "CLEARMARK_MAX_REJECT_RATIO" in too_many.stderr
    unknown = runner.invoke(app, ["etl", "curate", "--dataset", "nope"])
    assert unknown.exit_code == 1 and "not in the sources file" in unknown.stderr


def test_a_curated_matte_round_trips_through_the_store(settings: Settings, store: ObjectStore, tmp_path: Path) -> None:
    """Photo-style pairs: raw -> curated (alpha 16-bit as generated, colour) -> published -> fetched, selected rows too."""
    import numpy as np

    from clearmark.data.dataset import read_alpha, read_rgb
    from clearmark.data.synth import generate_synthetic

    root = tmp_path / "photo-pairs"
    generate_synthetic(root, 20, 17, size=64, styles="photo-train", progress=False)
    load_raw(store, "photo-pairs", root, progress=False)
    source = SourceSpec(name="photo-pairs", kind="local", layout="synthetic", path=root)
    result = curate(settings, store, "matte-test", [source], progress=False)
    assert (result.rows, result.rejects) == (20, 0)
    publish(store, "matte-test", result.version, result.rows, manifest_sha256(store, "matte-test", result.version))

    local = fetch_version(store, "matte-test", result.version, select=lambda manifest: manifest.head(5), progress=False)
    assert len(local.manifest) == 5 and local.has_matte(local.manifest)
    assert (local.manifest["alpha_mode"] == "I;16").all() and (local.manifest["alpha_width"] == 64).all()
    for (pair_id, _, mask, alpha), row in zip(local.matte_pairs(local.manifest), local.manifest.itertuples(), strict=True):
        stem = pair_id.removeprefix("photo-pairs/")
        np.testing.assert_array_equal(alpha, read_alpha(root / "alpha" / f"{stem}.png"))  # all 16 bits
        np.testing.assert_array_equal(mask, alpha > 0)
        np.testing.assert_array_equal(read_rgb(local.root / row.colour_key), read_rgb(root / "colour" / f"{stem}.png"))
