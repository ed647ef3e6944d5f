"""The ``curated_manifest`` suite: good manifests pass, each defect fails for the right expectation.

One temporary copy of the repository's GX project serves the whole module (GX is slow to
set up); every case runs the real checkpoint, Data Docs included.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from clearmark.data.quality import (
    QualityConfigError,
    QualityThresholds,
    gx_context,
    load_thresholds,
    validate_manifest,
)
from clearmark.settings import REPO_ROOT

GX_ROOT = REPO_ROOT / "great_expectations"
QUALITY_FILE = REPO_ROOT / "config" / "quality.yaml"
ROWS = 200  # enough rows for the 80/10/10 split check to be tight (tolerance 0.085 on train)
SUITE_SIZE = len(json.loads((GX_ROOT / "expectations" / "curated_manifest.json").read_text())["expectations"])


@pytest.fixture(scope="module")
def context() -> Iterator[object]:
    with gx_context(GX_ROOT) as gx_context_copy:
        yield gx_context_copy


@pytest.fixture(scope="module")
def thresholds() -> QualityThresholds:
    return load_thresholds(QUALITY_FILE, "qa", {"min_rows": 20})


def failed_checks(summary: dict) -> set[tuple[str, str, str | None]]:
    return {(f["check"], f["expectation_type"], f["column"]) for f in summary["failed"]}


def failure(summary: dict, check: str, expectation_type: str, column: str | None = None) -> dict:
    matches = [f for f in summary["failed"] if (f["check"], f["expectation_type"], f["column"]) == (check, expectation_type, column)]
    assert matches, f"{check}/{expectation_type}/{column} did not fail; failures: {failed_checks(summary)}"
    return matches[0]


# --- good manifests ------------------------------------------------------------------------


@pytest.mark.parametrize("dtypes", ["string", "object"])
def test_good_manifest_passes(context, thresholds, make_manifest: Callable[..., pd.DataFrame], dtypes: str) -> None:
    manifest = make_manifest(ROWS)
    if dtypes == "object":  # what pandas gives for strings read without the parquet's pandas metadata
        manifest = manifest.astype({c: object for c in manifest.select_dtypes("string").columns})
    summary = validate_manifest(context, manifest, thresholds)
    assert summary["failed"] == []
    assert summary["success"] is True
    assert summary["statistics"]["evaluated_expectations"] == SUITE_SIZE
    assert summary["statistics"]["successful_expectations"] == SUITE_SIZE
    assert summary["rows"] == ROWS


def test_good_manifest_survives_a_parquet_round_trip(context, thresholds, make_manifest, tmp_path: Path) -> None:
    make_manifest(ROWS).to_parquet(tmp_path / "manifest.parquet", index=False)
    summary = validate_manifest(context, pd.read_parquet(tmp_path / "manifest.parquet"), thresholds)
    assert summary["success"] is True, summary["failed"]


# --- defects -------------------------------------------------------------------------------


def test_missing_column_fails_the_schema(context, thresholds, make_manifest) -> None:
    summary = validate_manifest(context, make_manifest(ROWS).drop(columns=["mask_coverage"]), thresholds)
    assert summary["success"] is False
    schema = failure(summary, "schema", "expect_table_columns_to_match_set")
    assert schema["details"]["mismatched"]["missing"] == ["mask_coverage"]
    # The column's own checks report the missing column instead of crashing the run.
    coverage = failure(summary, "non_null", "expect_column_values_to_not_be_null", "mask_coverage")
    assert "mask_coverage" in coverage["error"]


def test_extra_column_fails_the_schema(context, thresholds, make_manifest) -> None:
    summary = validate_manifest(context, make_manifest(ROWS).assign(label="x"), thresholds)
    assert failed_checks(summary) == {("schema", "expect_table_columns_to_match_set", None)}
    assert failure(summary, "schema", "expect_table_columns_to_match_set")["details"]["mismatched"]["unexpected"] == ["label"]


def test_wrong_type_fails_the_schema(context, thresholds, make_manifest) -> None:
    manifest = make_manifest(ROWS)
    manifest["width"] = manifest["width"].astype(str)
    summary = validate_manifest(context, manifest, thresholds)
    assert ("schema", "expect_column_values_to_be_in_type_list", "width") in failed_checks(summary)
    assert summary["success"] is False


def test_a_manifest_with_mattes_passes_and_each_matte_defect_fails(context, thresholds, make_manifest) -> None:
    """Alpha and colour come together, the alpha is 16-bit or 8-bit grey and has its image's size."""
    manifest = make_manifest(ROWS, matte_every=2)
    assert validate_manifest(context, manifest, thresholds)["success"] is True
    manifest.loc[4, "alpha_width"] += 1
    manifest.loc[6, "alpha_mode"] = "RGB"
    manifest.loc[8, "colour_key"] = None
    manifest.loc[3, "colour_key"] = "colour/qa-00003.png"  # a colour layer without its alpha
    summary = validate_manifest(context, manifest, thresholds)
    assert failed_checks(summary) == {
        ("matte", "expect_column_pair_values_to_be_equal", None),
        ("matte", "expect_column_values_to_be_in_set", "alpha_mode"),
        ("matte", "expect_column_values_to_not_be_null", "colour_key"),
        ("matte", "expect_column_values_to_not_be_null", "alpha_key"),
    }
    size = failure(summary, "matte", "expect_column_pair_values_to_be_equal")
    assert size["kwargs"]["column_A"] == "alpha_width" and size["observed"]["unexpected_count"] == 1


def test_nulls_fail_non_null(context, thresholds, make_manifest) -> None:
    manifest = make_manifest(ROWS)
    manifest.loc[3, "sha256"] = None
    manifest.loc[5, "mask_key"] = None
    summary = validate_manifest(context, manifest, thresholds)
    assert failed_checks(summary) == {
        ("non_null", "expect_column_values_to_not_be_null", "sha256"),
        ("non_null", "expect_column_values_to_not_be_null", "mask_key"),
    }
    assert failure(summary, "non_null", "expect_column_values_to_not_be_null", "sha256")["observed"]["unexpected_count"] == 1


def test_duplicate_sha256_fails(context, thresholds, make_manifest) -> None:
    manifest = make_manifest(ROWS)
    manifest.loc[7, "sha256"] = manifest.loc[2, "sha256"]
    summary = validate_manifest(context, manifest, thresholds)
    assert failed_checks(summary) == {("duplicate_hashes", "expect_column_values_to_be_unique", "sha256")}
    assert failure(summary, "duplicate_hashes", "expect_column_values_to_be_unique", "sha256")["observed"]["unexpected_count"] == 2


def test_duplicate_id_fails(context, thresholds, make_manifest) -> None:
    manifest = make_manifest(ROWS)
    manifest.loc[9, "id"] = manifest.loc[8, "id"]
    summary = validate_manifest(context, manifest, thresholds)
    assert failed_checks(summary) == {("unique_id", "expect_column_values_to_be_unique", "id")}


def test_malformed_hash_fails(context, thresholds, make_manifest) -> None:
    manifest = make_manifest(ROWS)
    manifest.loc[1, "clean_sha256"] = "not-a-hash"
    summary = validate_manifest(context, manifest, thresholds)
    assert failed_checks(summary) == {("duplicate_hashes", "expect_column_values_to_match_regex", "clean_sha256")}


def test_absurd_dimensions_fail(context, thresholds, make_manifest) -> None:
    manifest = make_manifest(ROWS)
    manifest.loc[4, "width"] = 100_000
    manifest.loc[6, "height"] = 3
    summary = validate_manifest(context, manifest, thresholds)
    assert failed_checks(summary) == {
        ("dimensions", "expect_column_values_to_be_between", "width"),
        ("dimensions", "expect_column_values_to_be_between", "height"),
    }
    assert failure(summary, "dimensions", "expect_column_values_to_be_between", "width")["observed"]["partial_unexpected_list"] == [100_000]


def test_coverage_out_of_bounds_fails(context, thresholds, make_manifest) -> None:
    manifest = make_manifest(ROWS)
    manifest.loc[0, "mask_coverage"] = 1.5
    manifest.loc[1, "mask_coverage"] = -0.1
    summary = validate_manifest(context, manifest, thresholds)
    assert failed_checks(summary) == {("mask_coverage", "expect_column_values_to_be_between", "mask_coverage")}
    assert failure(summary, "mask_coverage", "expect_column_values_to_be_between", "mask_coverage")["observed"]["unexpected_count"] == 2


def test_empty_masks_fail_the_mean_coverage(context, thresholds, make_manifest) -> None:
    summary = validate_manifest(context, make_manifest(ROWS).assign(mask_coverage=0.0), thresholds)
    assert failed_checks(summary) == {("mask_coverage", "expect_column_mean_to_be_between", "mask_coverage")}
    assert failure(summary, "mask_coverage", "expect_column_mean_to_be_between", "mask_coverage")["observed"] == 0.0


def test_skewed_split_proportions_fail(context, thresholds, make_manifest) -> None:
    manifest = make_manifest(ROWS)
    manifest.loc[manifest["split"] == "val", "split"] = "train"  # ~90/0/10
    summary = validate_manifest(context, manifest, thresholds)
    proportions = {(f["kwargs"]["value_set"][0], f["expectation_type"]) for f in summary["failed"] if f["check"] == "split_proportions"}
    assert proportions == {("train", "expect_column_values_to_not_be_in_set"), ("val", "expect_column_values_to_be_in_set")}
    assert {f["check"] for f in summary["failed"]} == {"split_proportions"}


def test_unknown_split_value_fails(context, thresholds, make_manifest) -> None:
    manifest = make_manifest(ROWS)
    manifest.loc[0, "split"] = "holdout"
    summary = validate_manifest(context, manifest, thresholds)
    assert failed_checks(summary) == {("split_values", "expect_column_values_to_be_in_set", "split")}


def test_too_few_rows_fail(context, thresholds, make_manifest) -> None:
    summary = validate_manifest(context, make_manifest(10), thresholds)
    assert failed_checks(summary) == {("row_count", "expect_table_row_count_to_be_between", None)}
    assert failure(summary, "row_count", "expect_table_row_count_to_be_between")["observed"] == 10


def test_incomplete_pairs_fail(context, thresholds, make_manifest) -> None:
    manifest = make_manifest(ROWS)
    manifest.loc[[3, 4], ["clean_key", "clean_sha256"]] = None
    summary = validate_manifest(context, manifest, thresholds)
    assert failed_checks(summary) == {
        ("pair_completeness", "expect_column_values_to_not_be_null", "clean_key"),
        ("pair_completeness", "expect_column_values_to_not_be_null", "clean_sha256"),
    }


def test_detection_only_dataset_needs_no_clean_images(context, make_manifest) -> None:
    manifest = make_manifest(ROWS).assign(clean_key=None, clean_sha256=None)
    detection = load_thresholds(QUALITY_FILE, "common-watermarks", {"min_rows": 20})
    assert detection.detection_only is True
    assert validate_manifest(context, manifest, detection)["success"] is True


def test_non_dataframe_is_refused(context, thresholds) -> None:
    with pytest.raises(TypeError, match="pandas DataFrame"):
        validate_manifest(context, [{"id": "a"}], thresholds)  # type: ignore[arg-type]


# --- thresholds (no GX run) ----------------------------------------------------------------


def test_thresholds_merge_defaults_dataset_and_overrides() -> None:
    assert load_thresholds(QUALITY_FILE, "synthetic").min_rows == 500
    assert load_thresholds(QUALITY_FILE, "synthetic", {"min_rows": 20}).min_rows == 20
    default = load_thresholds(QUALITY_FILE, "unknown-dataset")
    assert default.min_rows == 100 and default.detection_only is False


def test_split_tolerance_widens_on_small_versions() -> None:
    thresholds = load_thresholds(QUALITY_FILE, "qa")
    assert thresholds.split_tolerance_for(0.1, 10_000) == thresholds.split_tolerance
    assert thresholds.split_tolerance_for(0.1, 20) == pytest.approx(3 * (0.1 * 0.9 / 20) ** 0.5)
    small, large = thresholds.suite_parameters(20), thresholds.suite_parameters(10_000)
    assert small["train_share_min"] < large["train_share_min"] == pytest.approx(0.75)
    assert large["not_train_share_min"] == pytest.approx(0.15)


def test_unknown_threshold_is_refused() -> None:
    with pytest.raises(QualityConfigError, match="min_row"):
        load_thresholds(QUALITY_FILE, "qa", {"min_row": 5})


def test_inverted_range_is_refused() -> None:
    with pytest.raises(QualityConfigError, match="min_side"):
        load_thresholds(QUALITY_FILE, "qa", {"min_side": 4096, "max_side": 1024})


def test_missing_thresholds_file_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(QualityConfigError, match="CLEARMARK_QUALITY_FILE"):
        load_thresholds(tmp_path / "nope.yaml", "qa")
