"""Evidently drift reports built against the real SeaweedFS (clearmark.drift.report)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from clearmark.drift.features import FEATURE_COLUMNS
from clearmark.drift.report import build_drift_report, drift_for_batch
from clearmark.settings import Settings
from clearmark.storage import ObjectStore

pytestmark = pytest.mark.integration


def feature_frame(rows: int, seed: int, *, shift: float = 0.0) -> pd.DataFrame:
    """Plausible feature rows: fixed-size PNGs (no JPEG quality); ``shift`` darkens, blurs and flattens them."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "width": np.full(rows, 512.0),
            "height": np.full(rows, 512.0),
            "aspect": np.ones(rows),
            "brightness": rng.normal(130 - 60 * shift, 20, rows),
            "contrast": rng.normal(55 - 25 * shift, 8, rows),
            "colourfulness": rng.normal(40 - 20 * shift, 10, rows),
            "sharpness": rng.lognormal(6 - 2 * shift, 0.5, rows),
            "jpeg_quality": np.full(rows, np.nan),
            "mask_coverage": rng.beta(2, 30, rows),
            "confidence": rng.beta(20 - 10 * shift, 3, rows),
        }
    )


@pytest.mark.slow  # two Evidently reports: ~55 s on 2 busy cores
def test_shifted_batch_drifts_more_than_a_batch_like_the_reference(settings: Settings, store: ObjectStore) -> None:
    reference = feature_frame(300, seed=1)
    same = build_drift_report(settings, store, feature_frame(120, seed=2), reference, "same.zip", "2026-01-02")
    shifted = build_drift_report(settings, store, feature_frame(120, seed=3, shift=1.0), reference, "shifted.zip", "2026-01-02")

    assert shifted["drift_share"] > same["drift_share"]
    assert same["alert"] is False and shifted["alert"] is True
    assert {"brightness", "contrast", "sharpness"} <= set(shifted["drifted_columns"])
    assert "jpeg_quality" in shifted["skipped_columns"]
    assert (shifted["n_current"], shifted["n_reference"]) == (120, 300)

    prefix = "drift/2026-01-02/shifted.zip/"
    bucket = settings.reports_bucket
    assert json.loads(store.get_bytes(bucket, prefix + "summary.json")) == shifted
    assert shifted["html_key"] == prefix + "report.html"
    assert b"<html" in store.get_bytes(bucket, shifted["html_key"])[:2000].lower()
    assert "metrics" in json.loads(store.get_bytes(bucket, shifted["json_key"]))
    stored = pd.read_parquet(io.BytesIO(store.get_bytes(bucket, prefix + "features.parquet")))
    assert list(stored.columns) == FEATURE_COLUMNS and len(stored) == 120


def test_tiny_batch_with_constant_and_empty_columns_gives_a_report(settings: Settings, store: ObjectStore, tmp_path) -> None:
    batch = feature_frame(1, seed=4)
    batch_path = tmp_path / "features.parquet"
    batch.to_parquet(batch_path)
    reference_path = tmp_path / "reference.parquet"
    feature_frame(50, seed=5).to_parquet(reference_path)

    summary = drift_for_batch(settings, store, str(batch_path), "one.tar", report_date="2026-01-03", reference=str(reference_path))

    assert summary["n_current"] == 1 and 0.0 <= summary["drift_share"] <= 1.0
    assert store.exists(settings.reports_bucket, "drift/2026-01-03/one.tar/report.html")
