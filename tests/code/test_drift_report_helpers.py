"""Unit tests of the drift report helpers that need no server (clearmark.drift.report)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clearmark.data.features import FEATURE_COLUMNS
from clearmark.drift.report import comparable_columns, drift_alert_message, report_prefix, validate_report_id


def test_report_prefix_follows_the_bucket_layout() -> None:
    assert report_prefix("2026-11-22", "photos.zip") == "drift/2026-11-22/photos.zip/"


@pytest.mark.parametrize("archive", ["", ".", "..", "a/b", "..\\x", "bad\nname", "x" * 256])
def test_unsafe_archive_names_are_rejected(archive: str) -> None:
    with pytest.raises(ValueError, match="cannot name a drift report"):
        validate_report_id("2026-11-22", archive)


@pytest.mark.parametrize("day", ["2026-13-01", "20261122", "2026-11-22/..", ""])
def test_bad_dates_are_rejected(day: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        validate_report_id(day, "photos.zip")


def test_columns_empty_on_either_side_are_skipped() -> None:
    batch = pd.DataFrame({c: [1.0, 2.0] for c in FEATURE_COLUMNS}).assign(jpeg_quality=np.nan)
    reference = pd.DataFrame({c: [1.0, 3.0] for c in FEATURE_COLUMNS}).assign(confidence=np.nan)
    compared, skipped = comparable_columns(batch, reference)
    assert skipped == ["jpeg_quality", "confidence"]
    assert compared == [c for c in FEATURE_COLUMNS if c not in skipped]


def test_alert_message_names_the_archive_share_columns_and_report() -> None:
    summary = {
        "archive": "photos.zip", "date": "2026-11-22", "drift_share": 0.6, "drifted_columns": ["brightness", "sharpness"],
        "threshold": 0.5, "alert": True, "n_current": 40, "n_reference": 200, "html_key": "drift/2026-11-22/photos.zip/report.html",
    }  # fmt: skip
    message = drift_alert_message(summary)
    for part in ("photos.zip", "60%", "brightness, sharpness", "exceeds", "50%", "drift/2026-11-22/photos.zip/report.html"):
        assert part in message
