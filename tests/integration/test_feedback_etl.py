"""The ETL's ``feedback`` dataset: reviewers' flagged originals, exported and curated as detection-only boxes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from clearmark.data.catalog import latest_version, read_manifest
from clearmark.data.etl import run_etl
from clearmark.data.feedback import FEEDBACK_INDEX, Flag, record_flag
from clearmark.data.raw import read_raw_index
from clearmark.settings import Settings
from clearmark.storage import ObjectStore
from tests.support.hostile_archives import encode, watermarked_rgb

pytestmark = pytest.mark.integration

SHA = "ab" * 32
REVIEW = "reviews/2026-12-01/trip.zip/"


def _original_key(member: str) -> str:
    return REVIEW + f"full/{member.replace('/', '_')}.before.png"


def _flag(member: str, flag: str, *, version: str = "3", pictured: bool = True) -> Flag:
    return Flag(SHA, version, member, flag, "reviewer", archive="trip.zip", original_key=_original_key(member) if pictured else "")


def test_flagged_images_are_exported_and_the_labelled_ones_curated_and_validated(settings: Settings, store: ObjectStore, tmp_path: Path) -> None:
    for index, member in enumerate(("trip/left.jpg", "trip/damaged.jpg", "trip/fine.jpg")):
        store.put_bytes(settings.reports_bucket, _original_key(member), encode(watermarked_rgb(96, 128, index), "PNG"))
    record_flag(store, _flag("trip/left.jpg", "good"))
    record_flag(store, _flag("trip/left.jpg", "watermark_left"))  # the latest flag counts
    record_flag(store, _flag("trip/left.jpg", "watermark_left", version="4"))  # same image, other model version: once
    record_flag(store, _flag("trip/damaged.jpg", "image_damaged"))
    record_flag(store, _flag("trip/fine.jpg", "good"))  # not a problem: not exported by default
    record_flag(store, _flag("trip/unpictured.jpg", "watermark_left", pictured=False))  # no full-size copy in the review
    labels = tmp_path / "labels"
    (labels / SHA[:16] / "trip").mkdir(parents=True)
    (labels / SHA[:16] / "trip" / "left.txt").write_text("0 0.5 0.5 0.25 0.2\n")

    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"datasets": {"feedback": {"sources": [
        {"name": "review-flags", "kind": "feedback", "layout": "boxes", "path": str(labels)},
    ]}}}))  # fmt: skip
    quality = yaml.safe_load(settings.quality_file.read_text())
    assert quality["datasets"]["feedback"]["detection_only"] is True  # the shipped thresholds' entry
    quality["datasets"]["feedback"]["min_rows"] = 1
    (tmp_path / "quality.yaml").write_text(yaml.safe_dump(quality))
    configured = settings.model_copy(update={"sources_file": sources, "quality_file": tmp_path / "quality.yaml"})

    result = run_etl(configured, "feedback")
    assert (result["rows"], result["rejects"], result["validation_success"]) == (1, 0, True)
    raw = read_raw_index(store, "review-flags")
    assert set(raw) == {FEEDBACK_INDEX, f"images/{SHA[:16]}/trip/left.png", f"labels/{SHA[:16]}/trip/left.txt", f"unlabelled/{SHA[:16]}/trip/damaged.png"}
    index = json.loads(store.get_bytes(settings.lake_bucket, f"raw/review-flags/{FEEDBACK_INDEX}"))
    assert {(entry["member"], entry["flag"], entry["labelled"]) for entry in index} == {("trip/left.jpg", "watermark_left", True), ("trip/damaged.jpg", "image_damaged", False)}

    version = latest_version(store, "feedback")
    manifest = read_manifest(store, "feedback", version)
    (row,) = manifest.itertuples()
    assert row.id == f"review-flags/{SHA[:16]}/trip/left" and pd.isna(row.clean_key)
    mask = Image.open(io.BytesIO(store.get_bytes(settings.lake_bucket, f"curated/feedback/{version}/{row.mask_key}")))
    assert row.mask_coverage == pytest.approx(0.25 * 0.2, abs=0.01) and mask.size == (128, 96)
