"""The review page in a real headless Chromium (Debian's, driven by Playwright).

* A 2,000-image review opened as a file: one page of thumbnails loads (one sprite, each
  card showing its own cell of it), no full-size image until a row is opened, and the
  before/after comparison opens on a click.
* Through a real Airflow API server with the plugin: a signed-in user's flag set in the
  browser is stored, anonymous flags are refused, and the daily aggregation counts the
  flag on the MLflow model version.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearmark.removal.review import ReviewOptions, build_review, publish_review
from clearmark.settings import REPO_ROOT, Settings
from clearmark.storage import ObjectStore, sha256_file
from tests.conftest import free_port
from tests.support.hostile_archives import encode, watermarked_rgb

pytestmark = pytest.mark.integration
playwright_api = pytest.importorskip("playwright.sync_api", reason="make install installs playwright (the test extra)")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium (scripts/install-browser.sh)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _archive_and_report(root: Path, count: int, side: int = 24) -> tuple[Path, dict]:
    """An archive of ``count`` small JPEGs and a report that calls every one cleaned."""
    archive = root / "big.zip"
    rng = np.random.default_rng(0)
    rows = []
    with zipfile.ZipFile(archive, "w") as zf:
        for index in range(count):
            zf.writestr(f"p/{index:05d}.jpg", encode(watermarked_rgb(side, side, index % 7), "JPEG", quality=80))
            rows.append({"path": f"p/{index:05d}.jpg", "status": "cleaned", "mask_coverage": 0.05, "confidence": float(rng.uniform(0.5, 1))})
    return archive, {"threshold": 0.5, "model_version": "1", "duration_s": 1.0, "rows": rows}


def test_a_2000_image_review_loads_one_page_and_full_images_only_on_click(browser, tmp_path: Path) -> None:  # noqa: ANN001
    archive, report = _archive_and_report(tmp_path, 2000)
    options = ReviewOptions(page_size=48, max_images=2000, thumb_side=24)
    build_review(archive, archive, report, tmp_path / "big.review", archive="big.zip", options=options)
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto((tmp_path / "big.review" / "index.html").as_uri())
    page.wait_for_selector("article.card .thumb")
    page.wait_for_load_state("networkidle")

    assert page.locator("article.card").count() == 48
    assert "page 1 of 42 (2000 images)" in page.inner_text("#pages")
    # The page's thumbnails come in one sprite, and each card shows its own cell of it.
    rows = json.loads((tmp_path / "big.review" / "review.json").read_text())["rows"]
    thumbs = [url for url in requested if "/thumbs/" in url]
    assert [url.rsplit("/", 2)[-2:] for url in thumbs] == [["thumbs", "000000.jpg"]] and {r["thumb"] for r in rows[:48]} == {"thumbs/000000.jpg"}
    assert not [url for url in requested if "/full/" in url]
    sprite = Image.open(tmp_path / "big.review" / "thumbs" / "000000.jpg").convert("RGB")
    for index in (0, 1, 47):
        shown = Image.open(io.BytesIO(page.locator("article.card .thumb").nth(index).screenshot())).convert("RGB")
        cells = {}
        for row in rows[:48]:
            x, y, width, height = row["thumb_box"][:4]
            cell = sprite.crop((x, y, x + width, y + height)).resize(shown.size, Image.Resampling.BILINEAR)
            cells[row["n"]] = np.abs(np.asarray(shown, dtype=int) - np.asarray(cell, dtype=int)).mean()
        picture = {row["n"]: int(row["member"][2:7]) % 7 for row in rows[:48]}  # the archive repeats 7 pictures
        best = min(cells, key=cells.get)
        assert picture[best] == picture[rows[index]["n"]] and cells[rows[index]["n"]] < 12, (index, sorted(cells.values())[:3])

    page.locator("article.card .pic").first.click()
    page.wait_for_selector("#viewer.open")
    page.wait_for_function("document.getElementById('after-img').complete && document.getElementById('after-img').naturalWidth > 0")
    full = [url for url in requested if "/full/" in url]
    assert len(full) == 2 and {u.rsplit(".", 2)[-2] for u in full} == {"before", "after"}
    page.fill("#slider", "20")
    assert "20%" in page.eval_on_selector("#after-clip", "e => e.style.clipPath")
    page.keyboard.press("Escape")
    assert not page.locator("#viewer.open").count()

    page.click("#next")
    assert "page 2 of 42" in page.inner_text("#pages")
    page.select_option("#status", "cleaned")
    assert page.locator("article.card").count() == 48
    page.close()


# --- a real Airflow API server with the plugin -------------------------------------------------
@pytest.fixture
def airflow_api(airflow_db: Path, settings: Settings, tmp_path: Path) -> Iterator[str]:
    """``airflow api-server`` on a free port with the plugins folder; user ``reviewer``."""
    port = free_port()
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"reviewer": "review-pw"}))
    env = {
        **os.environ,  # the settings fixture exported clearmark's servers and buckets
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "reviewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "review-test-secret",
        "NO_PROXY": "*",
    }
    log = (tmp_path / "api-server.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=3).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"airflow api-server did not start: {(tmp_path / 'api-server.log').read_text()[-3000:]}")
                time.sleep(2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def _token(base: str) -> str:
    request = urllib.request.Request(
        f"{base}/auth/token", data=json.dumps({"username": "reviewer", "password": "review-pw"}).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]


def _post(url: str, body: dict, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_flag_set_in_the_browser_is_stored_and_counted_on_the_model_version(
    browser, airflow_api: str, settings: Settings, store: ObjectStore, tmp_path: Path  # noqa: ANN001
) -> None:
    from mlflow import MlflowClient

    from clearmark.removal.field_quality import log_field_quality

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    run = client.create_run(client.create_experiment(settings.experiment))
    client.create_registered_model(settings.registered_model)
    version = client.create_model_version(settings.registered_model, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id).version
    archive, report = _archive_and_report(tmp_path, 5, side=64)
    report["model_version"] = version
    for bucket in (settings.inbox_bucket, settings.outbox_bucket):
        store.put_file(bucket, "processed/small.zip" if bucket == settings.inbox_bucket else "small.zip", archive)
    store.put_bytes(settings.outbox_bucket, "small.zip.report.json", json.dumps(report).encode())
    result = {
        "status": "ok", "name": "small.zip", "content_sha256": sha256_file(archive), "model_version": version,
        "processed_key": "processed/small.zip", "outbox_key": "small.zip", "report_key": "small.zip.report.json",
        "finished_at": "2026-11-22T10:00:00+00:00",
    }  # fmt: skip
    review = publish_review(settings, result)
    page_url = f"{airflow_api}/clearmark-drift/reviews/2026-11-22/small.zip/"
    flags_url = page_url + "flags"
    first = json.loads(store.get_bytes(settings.reports_bucket, review["prefix"] + "review.json"))["rows"][0]["member"]

    # Anonymous and forged requests are refused, and nothing is stored.
    assert _post(flags_url, {"member": first, "flag": "good"}) == 401
    assert _post(flags_url, {"member": first, "flag": "good"}, {"Authorization": "Bearer forged"}) == 403
    assert not list(store.list(settings.reports_bucket, "reviews/flags/"))

    context = browser.new_context()
    context.add_cookies([{"name": "_token", "value": _token(airflow_api), "url": airflow_api}])
    page = context.new_page()
    page.goto(page_url)
    page.wait_for_function("document.getElementById('notice').textContent.indexOf('signed in as reviewer') >= 0")
    page.locator(f'article.card[data-member="{first}"] button.watermark_left').click()
    page.wait_for_function("document.getElementById('notice').textContent.indexOf('flag saved') >= 0")
    assert page.locator(f'article.card[data-member="{first}"] button.watermark_left').get_attribute("aria-pressed") == "true"

    stored = [json.loads(store.get_bytes(settings.reports_bucket, o.key)) for o in store.list(settings.reports_bucket, "reviews/flags/")]
    assert [(s["member"], s["flag"], s["user"], s["model_version"]) for s in stored] == [(first, "watermark_left", "reviewer", version)]
    assert stored[0]["content_sha256"] == result["content_sha256"]

    # A re-run of the same content shows the same flag.
    publish_review(settings, result)
    page.reload()
    page.wait_for_function("document.getElementById('notice').textContent.indexOf('signed in') >= 0")
    assert page.locator(f'article.card[data-member="{first}"] button.watermark_left').get_attribute("aria-pressed") == "true"
    listing = page.context.request.get(f"{airflow_api}/clearmark-drift/api/reviews").json()
    assert listing[0]["archive"] == "small.zip" and listing[0]["flags"] == {"watermark_left": 1}
    context.close()

    logged = log_field_quality(settings)
    assert logged["logged"][version]["field_flags_watermark_left"] == 1
    tags = client.get_model_version(settings.registered_model, version).tags
    assert tags["field_flag_rate"] == "1.0" and tags["field_flags_watermark_left"] == "1" and tags["field_flagged_images"] == "1"
