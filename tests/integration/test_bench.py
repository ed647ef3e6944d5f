"""``clearmark bench`` end to end (smoke profile) on the real SeaweedFS and MLflow fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearmark.bench.run import PROFILES, run_benchmarks
from clearmark.model.backends import backend_status, choose_backend
from clearmark.model.promotion import ensure_baseline_champion
from clearmark.settings import Settings
from clearmark.storage import ObjectStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_smoke_profile_writes_every_figure_with_its_in_run_baseline(settings: Settings, store: ObjectStore, tmp_path: Path) -> None:
    ensure_baseline_champion(settings)  # the registry's champion, as after `clearmark stack up`
    store.put_bytes(settings.inbox_bucket, "users-archive.zip", b"not for the benchmark")
    buckets_before = {b["Name"] for b in store.client.list_buckets()["Buckets"]}
    lines: list[str] = []

    figures, table = run_benchmarks(settings, PROFILES["smoke"], out_dir=tmp_path / "results", echo=lines.append)

    assert table.parent == tmp_path / "results" and table.name.endswith(f"-{figures['machine']['slug']}.md")
    assert json.loads(table.with_suffix(".json").read_text())["removal"] == figures["removal"]
    assert any("[bench] training done" in line for line in lines)

    removal = figures["removal"]
    assert set(removal["archives"]) == {"8", "24"}
    assert len(removal["naive"]["runs_images_per_s"]) == 2  # before and after the archives
    assert removal["naive"]["images_per_s"] == max(removal["naive"]["runs_images_per_s"])  # the ratios use the faster run
    for archive in removal["archives"].values():
        assert archive["counts"]["cleaned"] + archive["counts"]["unchanged_no_watermark"] == archive["images"]
        assert archive["speedup_vs_naive"] == round(archive["images_per_s"] / removal["naive"]["images_per_s"], 2)
        assert set(archive["stage_ms"]) == {"decode", "detect", "inpaint", "encode"} and archive["stage_ms"]["detect"] > 0
    assert removal["archives"]["24"]["model_version"] == figures["removal"]["archives"]["8"]["model_version"]
    # The archives ran on auto's backend; the smallest again on every other CPU backend this machine has.
    assert {a["backend"] for a in removal["archives"].values()} == {removal["backend"]} == {choose_backend("auto").name}
    others = {name for name, why in backend_status().items() if why is None and name != removal["backend"] and choose_backend(name).device == "cpu"}
    assert removal["by_backend"]["archive"] == "8" and set(removal["by_backend"]["results"]) == others
    assert all(result["backend"] == name and result["images_per_s"] > 0 for name, result in removal["by_backend"]["results"].items())

    latency = figures["detection"]["latency"]
    assert set(latency["by_batch"]) == {"1", "2"} and latency["best_batch"] in (1, 2)
    # Which load is faster is the bench table's figure, not a test's: on loaded cores the two swap.
    assert figures["detection"]["model_load"]["cached_s"] > 0 and figures["detection"]["model_load"]["cold_s"] > 0

    quality = figures["quality"]
    assert 0.0 <= quality["mask"]["iou"] <= 1.0
    assert quality["removal"]["pipeline"]["restorer"] == settings.inpainter and 0.0 <= quality["removal"]["pipeline"]["worse_than_input"] <= 1.0
    assert (table.parent / quality["crops"]).is_file() and quality["crops"] == table.name.replace(".md", "-quality.png")
    assert figures["machine"]["cpu_capability"] and figures["machine"]["cpu"]
    assert figures["training"]["reported"]["epochs"] >= 1 and figures["training"]["reported"]["train_images_per_s"] > 0
    assert figures["platform"]["etl"]["rerun_share"] > 0
    assert all(not dag["heavy_modules"] for dag in figures["platform"]["dag_parse"]["dags"].values())

    # Every figure in the table sits next to its baseline; the user's buckets were not touched.
    text = table.read_text()
    measures = ("removal end to end, 24-image archive", "Inference backend: `", "naive loop", "plain float32 call", "first download", "doing nothing", "shipped pipeline", "import airflow.sdk")
    for measure in measures:
        assert measure in text, measure
    assert {b["Name"] for b in store.client.list_buckets()["Buckets"]} == buckets_before
    assert [o.key for o in store.list(settings.inbox_bucket)] == ["users-archive.zip"]
