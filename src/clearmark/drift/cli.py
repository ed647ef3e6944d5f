"""``clearmark drift``: an Evidently drift report for one batch of inbox features.

Prints the report's summary as JSON on stdout; a known failure prints its message,
which says what to do, and exits with status 1.  Heavy imports stay inside the command.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer


def drift(
    features: Annotated[
        str,
        typer.Option("--features", "-f", help="Batch features: a Parquet file or s3://bucket/key (e.g. the outbox's <archive>.features.parquet)."),
    ],
    archive: Annotated[str, typer.Option("--archive", "-a", help="Archive name; the report goes to reports/drift/<date>/<archive>/.")],
    report_date: Annotated[str | None, typer.Option("--date", help="Report date YYYY-MM-DD (default: today, UTC).")] = None,
    reference: Annotated[
        str | None,
        typer.Option("--reference", "-r", help="Reference features (file or s3://); default: the champion's training data, cached in the lake."),
    ] = None,
) -> None:
    """Compare a batch's image features with the training reference; upload HTML/JSON reports and print the summary."""
    from clearmark.drift.reference import DriftReferenceError
    from clearmark.drift.report import drift_alert_message, drift_for_batch
    from clearmark.settings import get_settings
    from clearmark.storage import ObjectStore, StorageError

    settings = get_settings()
    try:
        summary = drift_for_batch(settings, ObjectStore(settings), features, archive, report_date=report_date, reference=reference)
    except (DriftReferenceError, StorageError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(summary, indent=2))
    if summary["alert"]:
        typer.echo(f"warning: {drift_alert_message(summary)}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``clearmark drift`` to the root ``clearmark`` app."""
    app.command("drift")(drift)
