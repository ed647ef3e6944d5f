"""Evidently drift reports: one batch of inbox features against the training reference.

Each report lands in the reports bucket under ``drift/<YYYY-MM-DD>/<archive>/``:
``report.html`` (the Evidently page), ``report.json`` (its metrics), ``features.parquet``
(the batch) and ``summary.json`` (a few fields that the Airflow plugin lists without
parsing the big JSON).  Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clearmark.data.features import FEATURE_COLUMNS
from clearmark.storage import list_dated_summaries, validate_report_id

if TYPE_CHECKING:
    import pandas as pd

    from clearmark.settings import Settings
    from clearmark.storage import ObjectStore

DRIFT_PREFIX = "drift"
SUMMARY_FILE = "summary.json"


def report_prefix(report_date: str, archive: str) -> str:
    """Key prefix (in the reports bucket) of the drift report of one archive on one day."""
    validate_report_id(report_date, archive)
    return f"{DRIFT_PREFIX}/{report_date}/{archive}/"


def comparable_columns(batch: pd.DataFrame, reference: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Split :data:`FEATURE_COLUMNS` into those both tables have values for and those they do not.

    Evidently refuses a column that is empty on either side (e.g. ``jpeg_quality`` for a
    batch of PNGs), so such columns are left out of the drift test and reported as skipped.
    """
    compared = [c for c in FEATURE_COLUMNS if batch[c].notna().any() and reference[c].notna().any()]
    return compared, [c for c in FEATURE_COLUMNS if c not in compared]


def _feature_table(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """The feature columns as floats, infinities as missing; a clear error if a column is absent."""
    import numpy as np

    missing = [c for c in FEATURE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"The {what} features lack columns {missing}; write them with clearmark.data.features.image_features "
            f"(columns: {', '.join(FEATURE_COLUMNS)})."
        )
    if frame.empty:
        raise ValueError(f"The {what} features have no rows: there is nothing to compare.")
    return frame[FEATURE_COLUMNS].astype("float64").replace([np.inf, -np.inf], np.nan)


def _run_evidently(batch: pd.DataFrame, reference: pd.DataFrame, columns: list[str], drift_share: float, archive: str, day: str) -> Any:
    """Run DataDriftPreset (on ``columns``) and DataSummaryPreset; returns the snapshot."""
    import warnings

    import numpy as np
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    definition = DataDefinition(numerical_columns=FEATURE_COLUMNS)
    report = Report([DataDriftPreset(columns=columns, drift_share=drift_share), DataSummaryPreset()], include_tests=True)
    # A batch of one or two images makes some statistics undefined (std of one value); Evidently
    # copes but warns loudly, which would drown the task log.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return report.run(
            Dataset.from_pandas(batch, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
            name=f"clearmark drift: {archive} ({day})",
            metadata={"archive": archive, "date": day},
        )


def _drift_results(snapshot_dict: dict[str, Any], columns: list[str]) -> tuple[float, list[str]]:
    """Drift share from DriftedColumnsCount and the drifted columns from the per-column drift tests."""
    counts = [m for m in snapshot_dict["metrics"] if m["config"]["type"].endswith(":DriftedColumnsCount")]
    if not counts:
        raise RuntimeError("Evidently's report has no DriftedColumnsCount metric; is evidently 0.7.x installed?")
    share = float(counts[0]["value"]["share"])
    failed = {t["name"] for t in snapshot_dict.get("tests", []) if str(t.get("status", "")).upper().endswith("FAIL")}
    return share, [c for c in columns if f"Value Drift for column {c}" in failed]


def build_drift_report(
    settings: Settings,
    store: ObjectStore,
    batch_features: pd.DataFrame,
    reference: pd.DataFrame,
    archive: str,
    date: str,
) -> dict[str, Any]:
    """Compare a batch with the reference, upload the report, return its summary.

    Uploads ``report.html``, ``report.json``, ``features.parquet`` and ``summary.json`` to
    ``reports/drift/<date>/<archive>/``.  The summary holds ``archive``, ``date``,
    ``drift_share`` (share of drifted feature columns), ``drifted_columns``,
    ``skipped_columns`` (empty on one side), ``n_current``, ``n_reference``,
    ``html_key``, ``json_key``, ``threshold`` and ``alert`` (drift share above
    ``settings.drift_share_threshold``).
    """
    import io
    import tempfile
    from pathlib import Path

    prefix = report_prefix(date, archive)
    current = _feature_table(batch_features, "batch")
    baseline = _feature_table(reference, "reference")
    columns, skipped = comparable_columns(current, baseline)
    if not columns:
        raise ValueError("No feature column has values in both the batch and the reference; check that both came from image_features.")

    snapshot = _run_evidently(current, baseline, columns, settings.drift_share_threshold, archive, date)
    drift_share, drifted = _drift_results(snapshot.dict(), columns)
    bucket = settings.reports_bucket
    summary: dict[str, Any] = {
        "archive": archive,
        "date": date,
        "drift_share": drift_share,
        "drifted_columns": drifted,
        "skipped_columns": skipped,
        "n_current": len(current),
        "n_reference": len(baseline),
        "html_key": prefix + "report.html",
        "json_key": prefix + "report.json",
        "threshold": settings.drift_share_threshold,
        "alert": drift_share > settings.drift_share_threshold,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        snapshot.save_html(str(html))
        store.put_file(bucket, summary["html_key"], html, content_type="text/html; charset=utf-8")
    store.put_bytes(bucket, summary["json_key"], snapshot.json().encode(), content_type="application/json")
    parquet = io.BytesIO()
    batch_features.to_parquet(parquet, index=False)
    store.put_bytes(bucket, prefix + "features.parquet", parquet.getvalue(), content_type="application/vnd.apache.parquet")
    # Written last: the plugin lists a report only once all its files are there.
    store.put_bytes(bucket, prefix + SUMMARY_FILE, json.dumps(summary, indent=2).encode(), content_type="application/json")
    return summary


def drift_alert_message(summary: dict[str, Any]) -> str:
    """One-paragraph warning for a notifier when a batch drifted beyond the threshold."""
    drifted = ", ".join(summary.get("drifted_columns") or []) or "none"
    verdict = "exceeds" if summary.get("alert") else "is within"
    return (
        f"Drift for archive {summary['archive']} on {summary['date']}: {summary['drift_share']:.0%} of features drifted "
        f"({drifted}), which {verdict} the threshold of {summary['threshold']:.0%} "
        f"({summary['n_current']} images vs {summary['n_reference']} reference images). "
        f"Report: s3 reports bucket, key {summary['html_key']} (Airflow UI: Drift reports)."
    )


def read_features(settings: Settings, store: ObjectStore, source: str) -> pd.DataFrame:
    """Read a features Parquet file from a local path or ``s3://bucket/key``."""
    import io
    from pathlib import Path

    import pandas as pd

    if source.startswith("s3://"):
        bucket, _, key = source.removeprefix("s3://").partition("/")
        if not bucket or not key:
            raise ValueError(f"{source!r} is not an s3://bucket/key address.")
        if not store.exists(bucket, key):
            raise FileNotFoundError(f"No object at {source}; check the bucket and key (e.g. the outbox's <archive>.features.parquet).")
        return pd.read_parquet(io.BytesIO(store.get_bytes(bucket, key)))
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"No features file at {path}; pass a Parquet file written by the removal step or an s3:// address.")
    return pd.read_parquet(path)


def drift_for_batch(
    settings: Settings,
    store: ObjectStore,
    features: str,
    archive: str,
    *,
    report_date: str | None = None,
    reference: str | None = None,
    model_version: str | None = None,
) -> dict[str, Any]:
    """Build the drift report of one batch: features file in, summary out.

    ``reference`` is a features file (local or s3://); without it the cached reference of
    ``model_version`` (a version of ``settings.registered_model``; default: the champion's)
    is used, and built on first use.
    """
    from clearmark.drift.reference import champion_reference, load_reference, model_reference

    report_date = report_date or datetime.now(UTC).date().isoformat()
    validate_report_id(report_date, archive)
    batch = read_features(settings, store, features)
    if reference:
        baseline = read_features(settings, store, reference)
    else:
        key = model_reference(settings, store, model_version) if model_version else champion_reference(settings, store)
        baseline = load_reference(settings, store, key)
    return build_drift_report(settings, store, batch, baseline, archive, report_date)


def drift_report_for_batch(settings: Settings, result: dict[str, Any]) -> dict[str, Any]:
    """Drift report for one processed inbox item (the dict ``process_inbox_item`` returns).

    Items that failed, or that held no image, have nothing to compare: the summary then
    says why (``skipped``) and raises no alert.  The report is dated by the day the item
    was processed, so a retry overwrites the same report.  The reference is that of the
    ``model_version`` the item was processed with, even if ``champion`` has moved since.
    """
    import io

    import pandas as pd

    from clearmark.storage import ObjectStore

    archive = str(result.get("name") or result.get("key", "")).rstrip("/")
    features_key = result.get("features_key")
    skipped = {"archive": archive, "alert": False, "skipped": True, "model_version": result.get("model_version")}
    if result.get("status") == "failed" or not features_key:
        return {**skipped, "reason": f"no features to compare: item status {result.get('status')!r}, {result.get('reason', '')}".rstrip(", ")}
    store = ObjectStore(settings)
    bucket = result.get("outbox_bucket") or settings.outbox_bucket
    batch = pd.read_parquet(io.BytesIO(store.get_bytes(bucket, features_key)))
    if batch.empty:
        return {**skipped, "reason": "the item held no image, so there are no features to compare"}
    report_date = str(result.get("finished_at") or datetime.now(UTC).isoformat())[:10]
    model_version = str(result.get("model_version"))
    summary = drift_for_batch(settings, store, f"s3://{bucket}/{features_key}", archive, report_date=report_date, model_version=model_version)
    return {**summary, "skipped": False, "model_version": model_version}


def list_reports(store: ObjectStore, *, limit: int = 500) -> list[dict[str, Any]]:
    """Summaries of the newest ``limit`` drift reports (newest date first, then archive name)."""
    return list_dated_summaries(store, DRIFT_PREFIX, SUMMARY_FILE, limit=limit)


def open_report_html(store: ObjectStore, report_date: str, archive: str) -> Iterator[bytes] | None:
    """The stored ``report.html`` of one report as a stream of chunks, or ``None`` if absent.

    Raises ``ValueError`` for an id that cannot name a report (e.g. path traversal).
    """
    key = report_prefix(report_date, archive) + "report.html"
    bucket = store.settings.reports_bucket
    if not store.exists(bucket, key):
        return None
    body = store.client.get_object(Bucket=bucket, Key=key)["Body"]
    return body.iter_chunks(chunk_size=256 * 1024)
