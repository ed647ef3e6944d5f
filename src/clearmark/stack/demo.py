"""The README's main job on the embedded stack, driven through Airflow like a user would."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from clearmark.settings import Settings
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


def wait_for_train_run(client: AirflowClient, after: datetime, timeout: float, echo: Callable[[str], None]) -> dict:
    """The training run the curated-dataset Asset event created after ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.latest_run("clearmark_train")
        if run and datetime.fromisoformat(run["run_after"]) >= after:
            return client.wait_for_run("clearmark_train", run["dag_run_id"], max(deadline - time.monotonic(), 1), echo)
        time.sleep(5)
    raise AirflowError("clearmark_train was not scheduled by the curated dataset Asset; check the DAG is unpaused")


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


def run_demo(home: Path, *, timeout: float, echo: Callable[[str], None] = print) -> None:
    """Stack up, then ETL -> training (through the gate) -> a sample archive through the inbox."""
    settings = up(home, echo=echo)
    password = airflow_password(settings)
    if not password:
        raise AirflowError(f"Airflow wrote no admin password to {settings.home / 'airflow' / 'passwords.json'}")
    base = f"http://{settings.bind_host}:{settings.airflow_port}"
    client = AirflowClient(base, "admin", password)
    for dag_id in DAGS:
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)

    echo("1/3 nightly ETL: synthetic source -> raw -> curated version -> Great Expectations -> publish")
    started = datetime.now(timezone.utc)
    etl_run = client.trigger("clearmark_etl_nightly")
    client.wait_for_run("clearmark_etl_nightly", etl_run, timeout, echo)

    echo("2/3 training, scheduled by the curated dataset Asset, then the quality gate")
    wait_for_train_run(client, started, timeout, echo)

    echo("3/3 a sample archive dropped into the inbox")
    from clearmark.storage import ObjectStore

    archive = build_sample_archive(settings, settings.cache_dir / SAMPLE_ARCHIVE)
    ObjectStore(settings).put_file(settings.inbox_bucket, SAMPLE_ARCHIVE, archive, content_type="application/zip")
    wait_for_outbox(settings, SAMPLE_ARCHIVE, timeout, echo)

    echo("\nDone. What to look at:")
    echo(f"  Airflow   {base}  (admin / {password}): the three DAG runs; Browse > Drift reports")
    echo(f"  MLflow    {settings.mlflow_tracking_uri}  model {settings.registered_model}, alias champion")
    echo(f"  Outbox    s3://{settings.outbox_bucket}/{SAMPLE_ARCHIVE} and {SAMPLE_ARCHIVE}.report.csv")
    echo(f"  Data Docs s3://{settings.reports_bucket}/data-docs/{settings.dataset}/")
    echo("  Stop with `clearmark stack down` (data is kept in .clearmark/).")
