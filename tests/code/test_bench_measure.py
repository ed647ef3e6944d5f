"""Benchmark arithmetic: latency statistics, time to an IoU target, targets marked met or missed."""

from __future__ import annotations

import pytest

from clearmark.bench.measure import cpu_isa, latency_ms, machine_record, machine_slug
from clearmark.bench.removal import STAGES, stage_times
from clearmark.bench.table import _removal_rows, _training_rows, markdown_table
from clearmark.bench.training import time_to_iou


def test_latency_statistics_in_milliseconds() -> None:
    seconds = [0.010] * 18 + [0.020, 0.100]
    stats = latency_ms(seconds)
    assert stats == {"mean_ms": 15.0, "median_ms": 10.0, "p95_ms": 20.0}
    with pytest.raises(ValueError, match="no timings"):
        latency_ms([])


def test_time_to_iou_is_the_first_epoch_that_reaches_the_target() -> None:
    history = [(60.0, 0.5), (120.0, 0.81), (180.0, 0.79), (240.0, 0.92)]
    assert time_to_iou(history, 0.80) == 2.0
    assert time_to_iou(history, 0.90) == 4.0
    assert time_to_iou(history, 0.95) is None


def test_machine_slug_is_file_name_safe() -> None:
    slug = machine_slug()
    assert slug and all(c.isalnum() or c == "-" for c in slug) and "cpu" in slug


def _removal(e2e: float, naive: float, rss_small: float, rss_large: float) -> dict:
    def archive(rate: float, rss: float) -> dict:
        stages = {"decode": 3.1, "detect": 44.0, "inpaint": 21.5, "encode": 2.0}
        return {"images_per_s": rate, "speedup_vs_naive": round(rate / naive, 2), "peak_rss_mib": rss, "stage_ms": stages, "wall_ms_per_image": round(1000 / rate, 2)}

    return {
        "naive": {"images_per_s": naive, "runs_images_per_s": [naive, round(naive * 0.9, 2)]},
        "archives": {"200": archive(e2e, rss_small), "2000": archive(e2e, rss_large)},
        "rss_growth_ratio": round(rss_large / rss_small, 3),
    }


def test_removal_targets_are_marked_met_or_missed() -> None:
    met = _removal_rows(_removal(e2e=21.0, naive=6.0, rss_small=700, rss_large=720), gpu=False)
    assert [row[4].endswith("met") for row in met if row[4]] == [True, True, True]
    assert met[0][3] == "3.5×" and met[0][2] == "naive loop 6.0 img/s (faster of 2 runs: 6.0, 5.4)"
    assert met[0][4] == "≥ 20 img/s and ≥ 3×: met"  # a CPU without native bfloat16

    slow = _removal_rows(_removal(e2e=15.0, naive=6.0, rss_small=700, rss_large=2100), gpu=False)
    assert [row[4].endswith("**missed**") for row in slow if row[4]] == [True, True, True]
    assert _removal_rows(_removal(e2e=21.0, naive=6.0, rss_small=700, rss_large=720), gpu=True)[0][4].endswith("**missed**")  # 200 img/s on GPU
    bf16 = {**_removal(e2e=21.0, naive=6.0, rss_small=700, rss_large=720), "backends": {"torch-cpu-bf16": None, "torch-cpu-f32": None}}
    assert _removal_rows(bf16, gpu=False)[0][4] == "≥ 28 img/s and ≥ 3×: **missed**"  # no slower than before on native bf16


def test_an_instruction_set_capped_by_the_environment_is_recorded_and_its_figures_never_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures measured under ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA / OV_CPU_MAX_ISA emulate a lesser CPU: they must not pass for its own."""
    import torch

    figures = {"profile": {"name": "cpu"}, "started_at": "now", "model": "m", "seconds": {"total": 1.0},
               "removal": _removal(e2e=21.0, naive=6.0, rss_small=700, rss_large=720)}  # fmt: skip
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OV_CPU_MAX_ISA"):
        monkeypatch.delenv(name, raising=False)
    native = markdown_table(figures | {"machine": machine_record()})
    assert f"(the CPU's own: {cpu_isa()})" in native and "emulated" not in native and "≥ 20 img/s and ≥ 3×: met" in native

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # torch read it at import: its capability is patched to match
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    machine = machine_record()
    assert machine["isa_caps"] == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"} and machine["cpu_isa"] == cpu_isa()
    emulated = markdown_table(figures | {"machine": machine})
    assert (f"CPU capability `AVX2` (**emulated**: {cpu_isa()} capped to AVX2 by ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2; "
            "these are not figures of an AVX2 CPU)") in emulated  # fmt: skip
    assert "≥ 20 img/s and ≥ 3×: not judged, emulated" in emulated and "≥ 20 img/s and ≥ 3×: met" not in emulated


def test_removal_rows_name_the_backend_and_show_each_other_backend_of_the_run() -> None:
    removal = {
        **_removal(e2e=21.0, naive=6.0, rss_small=700, rss_large=720),
        "backend": "openvino",
        "by_backend": {"archive": "200", "results": {"torch-cpu-f32": {"images_per_s": 12.0, "speedup_vs_naive": 2.0, "stage_ms": {"detect": 150.0}}}},
    }
    rows = _removal_rows(removal, gpu=False)
    assert rows[0][0].startswith("removal end to end, 200-image archive (inbox → outbox, openvino")
    [other] = [row for row in rows if "torch-cpu-f32" in row[0]]
    assert other[:4] == ("removal end to end, 200-image archive on the torch-cpu-f32 backend (same run)", "12.0 img/s (detect 150.0 ms per image)", "naive loop 6.0 img/s", "2.0×")


def test_review_rows_show_each_archive_s_review_cost_against_its_removal_and_the_10_percent_target() -> None:
    removal = _removal(e2e=21.0, naive=6.0, rss_small=700, rss_large=720)
    cost = {"200": (9.5, 1.4, 200), "2000": (95.0, 7.6, 480)}  # removal s, review s, images pictured
    for size, (seconds, review_s, pictured) in cost.items():
        removal["archives"][size] |= {"images": int(size), "seconds": seconds, "review_s": review_s,
                                      "review_share_of_removal": round(review_s / seconds, 3), "review_pictured": pictured}  # fmt: skip
    rows = {row[0]: row[1:] for row in _removal_rows(removal, gpu=False) if row[0].startswith("review page")}
    assert rows == {
        "review page, 200-image archive: build and upload (200 of 200 images pictured)": ("1.4 s", "removal of the archive 9.5 s", "14.7% of removal", "≤ 10% of removal: **missed**"),
        "review page, 2000-image archive: build and upload (480 of 2000 images pictured)": ("7.6 s", "removal of the archive 95.0 s", "8.0% of removal", "≤ 10% of removal: met"),
    }  # fmt: skip
    del removal["archives"]["200"]["review_s"]  # a result saved before the review page: no row, no error
    assert [row[0] for row in _removal_rows(removal, gpu=False) if row[0].startswith("review page")] == [
        "review page, 2000-image archive: build and upload (480 of 2000 images pictured)"
    ]


def test_stage_row_shows_time_per_image_in_each_stage_against_wall_time() -> None:
    [stages] = [row for row in _removal_rows(_removal(e2e=20.0, naive=7.0, rss_small=700, rss_large=720), gpu=False) if "stages" in row[0]]
    assert stages[0] == "removal stages, 2000-image archive: ms per image inside each stage (threads overlap), decode / detect / inpaint / encode"
    assert stages[1:3] == ("3.1 / 44.0 / 21.5 / 2.0 ms", "wall time per image 50.0 ms")


def test_stage_times_average_the_processed_images_of_a_report() -> None:
    timed = lambda status, ms: {"status": status, **{f"{stage}_ms": ms for stage in STAGES}}  # noqa: E731
    report = {"rows": [timed("cleaned", 10.0), timed("unchanged_no_watermark", 20.0), timed("copied_non_image", 0.0), timed("error", 500.0)]}
    assert stage_times(report) == dict.fromkeys(STAGES, 15.0)
    with pytest.raises(ValueError, match="no processed images"):
        stage_times({"rows": [timed("error", 1.0)]})


def test_training_rows_say_not_reached_rather_than_none() -> None:
    reported = {"recipe": "default", "train_images_per_s": 4.0, "best_val_iou": 0.85, "minutes_to_val_iou_0.80": 12.5, "minutes_to_val_iou_0.90": None}
    recorded = {"best_val_iou": 0.78, "minutes": 192.6, "minutes_to_val_iou_0.80": None, "minutes_to_val_iou_0.90": None}
    rows = _training_rows({"reported": reported, "baselines": [], "budget_minutes_per_recipe": 1.0, "bundled_baseline_recorded": recorded})
    assert rows[1][1] == "IoU 0.80: 12.5 min, IoU 0.90: not reached (best 0.85)"
    assert rows[2][1].startswith("IoU 0.80: not reached, IoU 0.90: not reached (best 0.78 in 192.6 min")
    assert "None" not in "".join(cell for row in rows for cell in row)


def test_figures_of_finished_sections_are_saved_when_a_later_one_fails(tmp_path, monkeypatch) -> None:
    import json

    from clearmark.bench.run import PROFILES, run_benchmarks
    from clearmark.settings import load_settings
    from tests.support.hostile_archives import tiny_detector_folder

    def broken_training(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("training section broke")

    monkeypatch.setattr("clearmark.bench.training.measure_training", broken_training)
    model = tiny_detector_folder(tmp_path / "model", finds_everything=True)
    settings = load_settings(home=tmp_path / "home")
    with pytest.raises(RuntimeError, match="training section broke"):
        run_benchmarks(settings, PROFILES["smoke"], out_dir=tmp_path / "results", model=str(model), sections=("quality", "training"), echo=lambda _: None)
    [saved] = (tmp_path / "results").glob("*.json")
    figures = json.loads(saved.read_text())
    assert "quality" in figures and "training" not in figures
    assert 0.0 <= figures["quality"]["mask"]["iou"] <= 1.0
