"""The README's main job on the embedded stack, driven through Airflow like a user would."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from clearmark.settings import REPORTS_APP_PATH, Settings
from clearmark.stack.airflow_api import AirflowClient, AirflowError
from clearmark.stack.manager import airflow_password, up

DAGS = ("clearmark_etl_nightly", "clearmark_train", "clearmark_inbox")
SAMPLE_ARCHIVE = "sample-photos.zip"


def build_sample_archive(settings: Settings, path: Path, count: int = 12) -> Path:
    """A zip of watermarked JPEGs in nested folders plus a text file, made offline by the generator."""
    import zipfile

    from PIL import Image

    from clearmark.data.synth import generate_synthetic

    work = settings.cache_dir / "demo-sample"
    generate_synthetic(work, count=count, seed=7, size=512, progress=False)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index, image_path in enumerate(sorted((work / "watermarked").glob("*.png"))):
            folder = "holidays/beach" if index % 2 else "holidays/city"
            jpeg = work / f"{image_path.stem}.jpg"
            Image.open(image_path).convert("RGB").save(jpeg, quality=90)
            archive.write(jpeg, f"{folder}/{image_path.stem}.jpg")
        archive.writestr("holidays/notes.txt", "Non-image files are copied through untouched.\n")
    return path


def new_run_id(client: AirflowClient, dag_id: str, after: datetime, wait: float) -> str | None:
    """The id of a run of ``dag_id`` created after ``after``, waiting up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        run = client.latest_run(dag_id)
        # queued_at, not the logical date: a scheduled run's logical date lies in the past.
        if run and run.get("queued_at") and datetime.fromisoformat(run["queued_at"]) >= after:
            return run["dag_run_id"]
        if time.monotonic() >= deadline:
            return None
        time.sleep(5)


def wait_for_outbox(settings: Settings, key: str, timeout: float, echo: Callable[[str], None]) -> None:
    from clearmark.storage import ObjectStore

    store = ObjectStore(settings)
    deadline = time.monotonic() + timeout
    echo(f"waiting for s3://{settings.outbox_bucket}/{key} (the inbox DAG polls every few minutes)")
    while time.monotonic() < deadline:
        if store.exists(settings.outbox_bucket, key) and store.exists(settings.outbox_bucket, f"{key}.report.json"):
            return
        failed = f"failed/{key}"
        if store.exists(settings.inbox_bucket, failed):
            raise AirflowError(f"the sample archive failed: see s3://{settings.inbox_bucket}/{failed}.error.json")
        time.sleep(10)
    raise AirflowError(f"s3://{settings.outbox_bucket}/{key} did not appear within {timeout:.0f} s; see the clearmark_inbox runs")


def wait_for_review(settings: Settings, archive: str, timeout: float, echo: Callable[[str], None]) -> str:
    """The review page's path below the plugin app, once the inbox DAG's review task wrote it."""
    from clearmark.removal.review import list_reviews, review_page_path
    from clearmark.storage import ObjectStore

    store = ObjectStore(settings)
    deadline = time.monotonic() + timeout
    echo(f"waiting for the review of {archive} (the inbox DAG's review task)")
    while time.monotonic() < deadline:
        found = [r for r in list_reviews(store) if r["archive"] == archive]
        if found:
            return review_page_path(found[0]["date"], archive)
        time.sleep(5)
    raise AirflowError(f"no review of {archive} within {timeout:.0f} s; see the review task of the clearmark_inbox run")


def run_demo(home: Path, *, timeout: float, echo: Callable[[str], None] = print) -> None:
    """Stack up, then ETL -> training (through the gate) -> a sample archive through the inbox."""
    settings = up(home, echo=echo)
    password = airflow_password(settings)
    if not password:
        raise AirflowError(f"Airflow wrote no admin password to {settings.home / 'airflow' / 'passwords.json'}")
    base = f"http://{settings.bind_host}:{settings.airflow_port}"
    client = AirflowClient(base, "admin", password)
    started = datetime.now(timezone.utc)
    for dag_id in DAGS:
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)  # from now on the nightly, Asset and inbox schedules run by themselves

    echo("1/3 nightly ETL: synthetic source -> raw -> curated version -> Great Expectations -> publish")
    # Unpausing a DAG whose catchup is off schedules its latest interval at once; trigger only if it did not.
    etl_run = new_run_id(client, "clearmark_etl_nightly", started, wait=60) or client.trigger("clearmark_etl_nightly")
    client.wait_for_run("clearmark_etl_nightly", etl_run, timeout, echo)

    echo("2/3 training, scheduled by the curated dataset Asset, then the quality gate")
    train_run = new_run_id(client, "clearmark_train", started, wait=300)
    if train_run is None:
        raise AirflowError("clearmark_train was not scheduled by the curated dataset Asset; is the DAG unpaused?")
    client.wait_for_run("clearmark_train", train_run, timeout, echo)

    echo("3/3 a sample archive dropped into the inbox")
    from clearmark.storage import ObjectStore

    archive = build_sample_archive(settings, settings.cache_dir / SAMPLE_ARCHIVE)
    ObjectStore(settings).put_file(settings.inbox_bucket, SAMPLE_ARCHIVE, archive, content_type="application/zip")
    wait_for_outbox(settings, SAMPLE_ARCHIVE, timeout, echo)

    review = wait_for_review(settings, SAMPLE_ARCHIVE, timeout, echo)

    echo("\nDone. What to look at:")
    echo(f"  Review    {base}{REPORTS_APP_PATH}/{review}  (admin / {password}): before | mask | after, flag what came back wrong")
    echo(f"  Airflow   {base}: the DAG runs; the Reviews & drift menu")
    echo(f"  MLflow    {settings.mlflow_tracking_uri}  model {settings.registered_model}, alias champion")
    echo(f"  Outbox    s3://{settings.outbox_bucket}/{SAMPLE_ARCHIVE} and {SAMPLE_ARCHIVE}.report.csv")
    echo(f"  Data Docs s3://{settings.reports_bucket}/data-docs/{settings.dataset}/")
    echo("  Stop with `clearmark stack down` (data is kept in .clearmark/).")
