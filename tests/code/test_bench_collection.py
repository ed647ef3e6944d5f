"""The collection benchmark (issue 14): one archive under one mark, and a mixed one, per image and shared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clearmark.bench.collection import CollectionSpec, measure_collection
from clearmark.bench.table import _collection_rows
from clearmark.settings import REPO_ROOT, Settings

SPEC = CollectionSpec(images=8, size=192, seed=3)


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("home")
    return measure_collection(Settings(home=home), str(REPO_ROOT / "models" / "baseline"), home / "work", spec=SPEC, progress=False)


def test_the_collection_is_cleaned_with_its_shared_mark(figures: dict[str, Any]) -> None:
    collection = figures["collection"]
    on, off = collection["shared_mark"], collection["per_image"]
    assert [entry["shared"] for entry in on["shared_marks"]] == [True]
    assert on["restorations"]["shared"] >= SPEC.images - 1  # the per-image check may send one back
    assert off["restorations"]["shared"] == 0 and off["shared_marks"] == []
    assert collection["alpha_error"]["in_mark"] < 0.06
    assert on["psnr_in_mask_db"] > off["psnr_in_mask_db"] + 3 > collection["nothing"]["psnr_in_mask_db"]
    assert collection["cost_ratio_shared_vs_per_image"] == pytest.approx(on["seconds_per_image"] / off["seconds_per_image"], abs=1e-3)


def test_a_mixed_archive_finds_no_shared_mark_and_loses_nothing(figures: dict[str, Any]) -> None:
    on, off = figures["mixed"]["shared_mark"], figures["mixed"]["per_image"]
    assert [entry["shared"] for entry in on["shared_marks"]] == [False]
    assert on["restorations"]["shared"] == 0
    assert (on["psnr_db"], on["psnr_in_mask_db"]) == (off["psnr_db"], off["psnr_in_mask_db"])


def _figures(on_whole: float, on_in_mark: float, off_in_mark: float, cost: float, mixed_loss: float) -> dict[str, Any]:
    def scores(whole: float, in_mark: float, **extra: Any) -> dict[str, Any]:
        return {"psnr_db": whole, "psnr_in_mask_db": in_mark, "seconds_per_image": 0.1, **extra}

    return {
        "spec": {"images": 60, "size": 512, "jpeg_quality": [88, 98]},
        "mark_opacity": 0.6,
        "collection": {
            "nothing": scores(25.0, 15.0), "telea_true_mask": scores(33.0, 24.0), "per_image": scores(30.0, off_in_mark),
            "shared_mark": scores(on_whole, on_in_mark), "cost_ratio_shared_vs_per_image": cost,
            "alpha_error": {"in_mark": 0.02, "outside": 0.001},
        },  # fmt: skip
        "mixed": {"per_image": scores(32.0, 21.0), "shared_mark": scores(32.0 - mixed_loss, 21.0)},
    }


def test_collection_targets_are_marked_met_or_missed() -> None:
    met = _collection_rows(_figures(on_whole=40.0, on_in_mark=35.0, off_in_mark=30.0, cost=2.0, mixed_loss=0.05))
    assert [row[4].endswith(": met") for row in met if row[4]] == [True, True, True]
    for missed in (
        _figures(on_whole=39.9, on_in_mark=36.0, off_in_mark=20.0, cost=2.1, mixed_loss=0.11),
        _figures(on_whole=41.0, on_in_mark=34.9, off_in_mark=20.0, cost=2.1, mixed_loss=0.2),
        _figures(on_whole=41.0, on_in_mark=36.0, off_in_mark=31.1, cost=2.1, mixed_loss=0.2),
    ):
        assert [row[4].endswith("**missed**") for row in _collection_rows(missed) if row[4]] == [True, True, True]
