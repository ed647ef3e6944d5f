"""Pixel metrics, quality labels and the gate's rule: pure functions, no servers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clearmark.model.gate import GateConfig, GateConfigError, decide, load_gate_config, removal_check
from clearmark.model.metrics import PixelCounts, distribution, quality_label
from clearmark.settings import REPO_ROOT

PASSING = {"iou": 0.85, "dice": 0.90, "precision": 0.88, "recall": 0.91, "accuracy": 0.99}


def test_pixel_counts_of_two_masks() -> None:
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True  # 4 watermark pixels
    predicted = np.zeros((4, 4), bool)
    predicted[:2, :3] = True  # 4 right + 2 wrong
    counts = PixelCounts.from_masks(predicted, truth)
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (4, 2, 0, 10)
    assert counts.iou == pytest.approx(4 / 6)
    assert counts.dice == pytest.approx(8 / 10)
    assert counts.precision == pytest.approx(4 / 6)
    assert counts.recall == 1.0
    assert counts.accuracy == pytest.approx(14 / 16)


def test_counts_add_up_over_images_and_empty_masks_score_perfectly() -> None:
    empty = PixelCounts.from_masks(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    assert empty.iou == empty.dice == empty.precision == empty.recall == 1.0
    missed = PixelCounts.from_masks(np.zeros((2, 2), bool), np.ones((2, 2), bool))
    total = empty + missed
    assert (total.tp, total.fn, total.tn) == (0, 4, 9)
    assert total.iou == 0.0


def test_mask_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        PixelCounts.from_masks(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


@pytest.mark.parametrize(
    ("iou", "label"),
    [(0.95, "EXCELLENT"), (0.90, "EXCELLENT"), (0.85, "GOOD"), (0.80, "GOOD"), (0.7, "ACCEPTABLE"), (0.69, "NEEDS IMPROVEMENT")],
)
def test_quality_label_bounds(iou: float, label: str) -> None:
    assert quality_label(iou) == label


def test_distribution_of_per_image_scores() -> None:
    stats = distribution([0.2, 0.4, 0.9])
    assert stats["mean"] == pytest.approx(0.5)
    assert stats["median"] == 0.4
    assert (stats["min"], stats["max"]) == (0.2, 0.9)
    assert stats["std"] == pytest.approx(np.std([0.2, 0.4, 0.9]))
    with pytest.raises(ValueError, match="empty"):
        distribution([])


def test_repository_gate_file_holds_the_issue_thresholds() -> None:
    gate = load_gate_config(REPO_ROOT / "config" / "gate.yaml")
    assert gate.minimum == {"iou": 0.80, "dice": 0.80, "precision": 0.75, "recall": 0.75}
    assert (gate.split, gate.compare_metric, gate.tolerance) == ("test", "iou", 0.0)
    assert (gate.removal_compare, gate.removal_tolerance_db) == (("psnr_whole", "psnr_mark"), 0.0)


def test_gate_file_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(GateConfigError, match="missing"):
        load_gate_config(tmp_path / "nope.yaml")
    lax = tmp_path / "lax.yaml"
    lax.write_text("minimum: {iou: 0.5, dice: 0.5}\n")
    with pytest.raises(GateConfigError, match="precision, recall"):
        load_gate_config(lax)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("minimum: {iou: 80, dice: 0.8, precision: 0.75, recall: 0.75}\n")
    with pytest.raises(GateConfigError, match=r"\[0, 1\]"):
        load_gate_config(wrong)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("minimum: {iou: 0.8, dice: 0.8, precision: 0.75, recall: 0.75}\nremoval_compare: [ssim]\n")
    with pytest.raises(GateConfigError, match="removal_compare may list psnr_whole, psnr_mark only"):
        load_gate_config(unknown)
    off = tmp_path / "off.yaml"
    off.write_text("minimum: {iou: 0.8, dice: 0.8, precision: 0.75, recall: 0.75}\nremoval_compare: []\n")
    assert load_gate_config(off).removal_compare == ()


def test_first_model_passes_on_thresholds_alone() -> None:
    passed, reasons = decide(PASSING, None, GateConfig())
    assert passed
    assert "no champion yet" in reasons[0]


def test_better_model_passes_and_equal_is_not_worse() -> None:
    assert decide(PASSING, {**PASSING, "iou": 0.82, "version": "1"}, GateConfig())[0]
    assert decide(PASSING, {**PASSING, "version": "1"}, GateConfig())[0]


def test_worse_model_is_rejected_even_above_thresholds() -> None:
    passed, reasons = decide(PASSING, {**PASSING, "iou": 0.86, "version": "3"}, GateConfig())
    assert not passed
    assert reasons == ["iou 0.8500 is worse than the champion's 0.8600 (version 3) on the same split"]
    assert decide(PASSING, {**PASSING, "iou": 0.86}, GateConfig(tolerance=0.02))[0]


def test_model_under_thresholds_lists_every_failing_metric() -> None:
    weak = {"iou": 0.6, "dice": 0.75, "precision": 0.9, "recall": 0.7, "accuracy": 0.97}
    passed, reasons = decide(weak, None, GateConfig())
    assert not passed
    assert [r.split()[0] for r in reasons] == ["iou", "dice", "recall"]


RESTORES = {"psnr_whole": 36.0, "psnr_mark": 25.0, "restorer": "restore"}


def test_a_candidate_that_restores_worse_than_the_champion_is_rejected() -> None:
    champion = {**PASSING, "version": "4", "removal": {**RESTORES, "psnr_mark": 25.5}}
    passed, reasons = decide({**PASSING, "removal": RESTORES}, champion, GateConfig())
    assert not passed
    assert reasons == ["psnr_mark 25.00 dB is worse than the champion's 25.50 dB (version 4, restorer restore) on the same split"]
    assert decide({**PASSING, "removal": RESTORES}, champion, GateConfig(removal_tolerance_db=0.5))[0]
    assert decide({**PASSING, "removal": RESTORES}, champion, GateConfig(removal_compare=("psnr_whole",)))[0]


def test_removal_is_not_compared_without_figures_on_both_sides() -> None:
    skipped = {"skipped": "split 'test' of d v1 has no clean images to score removal against"}
    champion = {**PASSING, "version": "4", "removal": RESTORES}
    assert removal_check({**PASSING, "removal": skipped}, champion, GateConfig()) == ([], f"removal quality not compared: {skipped['skipped']}")
    assert removal_check({**PASSING, "removal": RESTORES}, None, GateConfig())[1] == "removal quality not compared: no champion yet"
    assert removal_check(PASSING, champion, GateConfig())[1] == "removal quality not compared: it was not measured for both models"
    assert removal_check({**PASSING, "removal": RESTORES}, champion, GateConfig(removal_compare=()))[1].startswith("removal quality not gated")
    assert decide({**PASSING, "removal": skipped}, {**champion, "removal": {**RESTORES, "psnr_mark": 40.0}}, GateConfig())[0]
