"""validate_version against a real SeaweedFS: validation.json and Data Docs land in object storage,
and the repository's great_expectations/ folder is left untouched."""

from __future__ import annotations

import json
import subprocess

import pytest

from clearmark.data.quality import validate_version
from clearmark.settings import REPO_ROOT

pytestmark = pytest.mark.integration

VERSION = "v0123456789ab"


def gx_folder_status() -> str:
    """Git's view of great_expectations/, ignored files (uncommitted/) included."""
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "great_expectations"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def test_passing_version_publishes_summary_and_data_docs(settings, store, make_manifest) -> None:
    before = gx_folder_status()

    summary = validate_version(settings, store, "qa", VERSION, make_manifest(40), overrides={"min_rows": 20})

    assert summary["success"] is True and summary["failed"] == []
    stored = json.loads(store.get_bytes(settings.lake_bucket, f"curated/qa/{VERSION}/validation.json"))
    assert stored == summary
    assert stored["data_docs_prefix"] == f"s3://{settings.reports_bucket}/data-docs/qa/{VERSION}/"

    docs = {obj.key for obj in store.list(settings.reports_bucket, f"data-docs/qa/{VERSION}/")}
    assert len(docs) == summary["data_docs_files"]
    index = store.get_bytes(settings.reports_bucket, f"data-docs/qa/{VERSION}/index.html").decode()
    assert "curated_manifest" in index
    # Every page and asset the site needs is there: the validation page and the stylesheet it links.
    assert any(key.startswith(f"data-docs/qa/{VERSION}/validations/curated_manifest/qa_{VERSION}/") and key.endswith(".html") for key in docs)
    assert f"data-docs/qa/{VERSION}/static/styles/data_docs_default_styles.css" in docs
    assert store.head(settings.reports_bucket, f"data-docs/qa/{VERSION}/index.html")["ContentType"] == "text/html"
    # The suite page shows the thresholds this run used (Data Docs render parameters by name only).
    suite_page = store.get_bytes(settings.reports_bucket, f"data-docs/qa/{VERSION}/expectations/curated_manifest.html").decode()
    assert "<code>min_rows</code> = 20" in suite_page

    assert gx_folder_status() == before


def test_failing_version_reports_without_raising(settings, store, make_manifest) -> None:
    manifest = make_manifest(40)
    manifest.loc[1, "sha256"] = manifest.loc[0, "sha256"]

    summary = validate_version(settings, store, "qa", VERSION, manifest, overrides={"min_rows": 20})

    assert summary["success"] is False
    stored = json.loads(store.get_bytes(settings.lake_bucket, f"curated/qa/{VERSION}/validation.json"))
    assert stored["success"] is False
    assert [(f["check"], f["column"]) for f in stored["failed"]] == [("duplicate_hashes", "sha256")]
    assert stored["statistics"]["unsuccessful_expectations"] == 1
    assert store.exists(settings.reports_bucket, f"data-docs/qa/{VERSION}/index.html")


def test_invalid_version_name_is_refused_before_any_write(settings, store, make_manifest) -> None:
    with pytest.raises(ValueError, match="version"):
        validate_version(settings, store, "qa", "../v1", make_manifest(40))
    assert list(store.list(settings.reports_bucket)) == [] and list(store.list(settings.lake_bucket)) == []
