"""Evidently drift reports built against the real SeaweedFS (clearmark.drift.report)."""

from __future__ import annotations

import io
import json

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from clearmark.data.features import FEATURE_COLUMNS
from clearmark.cli import app
from clearmark.drift.report import build_drift_report
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


def test_cli_reports_a_one_image_batch_read_from_s3(settings: Settings, store: ObjectStore, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    feature_frame(1, seed=4).to_parquet(buffer)  # one image: constant and empty columns everywhere
    store.put_bytes(settings.outbox_bucket, "one.tar.features.parquet", buffer.getvalue())
    reference_path = tmp_path / "reference.parquet"
    feature_frame(50, seed=5).to_parquet(reference_path)

    result = CliRunner().invoke(
        app,
        ["drift", "--features", f"s3://{settings.outbox_bucket}/one.tar.features.parquet", "--archive", "one.tar",
         "--date", "2026-01-03", "--reference", str(reference_path)],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_current"] == 1 and 0.0 <= summary["drift_share"] <= 1.0
    assert store.exists(settings.reports_bucket, "drift/2026-01-03/one.tar/report.html")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--features", "s3://{outbox}/missing.parquet", "--archive", "a.zip"], "No object at"),
        (["--features", "{bad}", "--archive", "a.zip"], "lack columns"),
        (["--features", "{bad}", "--archive", "../etc"], "cannot name a drift report"),
        (["--features", "{bad}", "--archive", "a.zip", "--date", "22/11/2026"], "YYYY-MM-DD"),
    ],
)
def test_cli_bad_input_exits_1_with_advice(settings: Settings, store: ObjectStore, tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"brightness": [1.0]}).to_parquet(bad)
    filled = [a.format(outbox=settings.outbox_bucket, bad=bad) for a in args]

    result = CliRunner().invoke(app, ["drift", *filled, "--reference", str(bad)])

    assert result.exit_code == 1
    assert message in result.stderr
    assert not list(store.list(settings.reports_bucket, "drift/"))
