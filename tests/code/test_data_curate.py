"""Curation without storage: version determinism, normalisation and rejects on local files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearmark.data.curate import CuratedPair, curate_folder, curation_parameters, curation_version, reject_ratio
from clearmark.data.manifest import MANIFEST_COLUMNS, manifest_frame
from clearmark.data.sources import SourceSpec
from clearmark.data.splits import stable_split
from clearmark.settings import Settings
from tests.support.curation_inputs import (
    EXPECTED_NORMALISED,
    EXPECTED_REJECTS,
    HEIGHT,
    MARK,
    MARK_COVERAGE,
    WIDTH,
    accepted_stems,
    build_pairs_source,
)

INDEX = {
    "clean/a.png": {"sha256": "aa" * 32, "size": 10},
    "watermarked/a.png": {"sha256": "bb" * 32, "size": 12},
}


def _pairs_source(path: Path, threshold: int = 24, name: str = "t") -> SourceSpec:
    return SourceSpec(name=name, kind="local", layout="pairs", path=path, options={"mask_threshold": threshold})


def _parameters(source: SourceSpec, max_pixels: int = 1_000_000) -> dict:
    return curation_parameters(Settings(max_image_pixels=max_pixels), [source])


def test_version_is_deterministic_and_ignores_order(tmp_path: Path) -> None:
    source = _pairs_source(tmp_path)
    version = curation_version({"t": INDEX}, _parameters(source))
    assert version.startswith("v") and len(version) == 13
    reordered = {"t": dict(reversed(list(INDEX.items())))}
    assert curation_version(reordered, _parameters(source)) == version
    # Where the source lives on this machine does not shape the curated output.
    assert curation_version({"t": INDEX}, _parameters(_pairs_source(tmp_path / "elsewhere"))) == version


@pytest.mark.parametrize(
    "change",
    ["content", "new_file", "renamed_file", "threshold", "max_pixels"],
)
def test_version_changes_with_inputs_and_parameters(tmp_path: Path, change: str) -> None:
    source = _pairs_source(tmp_path)
    baseline = curation_version({"t": INDEX}, _parameters(source))
    index, parameters = dict(INDEX), _parameters(source)
    if change == "content":
        index["clean/a.png"] = {"sha256": "cc" * 32, "size": 10}
    elif change == "new_file":
        index["clean/b.png"] = {"sha256": "dd" * 32, "size": 3}
    elif change == "renamed_file":
        index["clean/z.png"] = index.pop("clean/a.png")
    elif change == "threshold":
        parameters = _parameters(_pairs_source(tmp_path, threshold=30))
    else:
        parameters = _parameters(source, max_pixels=2_000_000)
    assert curation_version({"t": index}, parameters) != baseline


def _curate(root: Path, **kwargs) -> tuple[list[dict], list[dict], dict[str, bytes]]:
    emitted: dict[str, bytes] = {}

    def collect(pair: CuratedPair) -> None:
        emitted.update(pair.files)

    rows, rejects = curate_folder(_pairs_source(root), root, max_image_pixels=1_000_000, emit=collect, progress=False, **kwargs)
    return rows, rejects, emitted


def test_bad_inputs_are_rejected_with_reasons_and_the_rest_normalised(tmp_path: Path) -> None:
    root = build_pairs_source(tmp_path / "source")
    rows, rejects, emitted = _curate(root)

    assert {r["path"]: r["reason"] for r in rejects} == EXPECTED_REJECTS
    assert all(r["source"] == "t" and r["detail"] for r in rejects)

    manifest = manifest_frame(rows)
    assert list(manifest["id"]) == [f"t/{stem}" for stem in accepted_stems()]
    by_stem = manifest.set_index(manifest["id"].str.removeprefix("t/"))
    for stem, mode in EXPECTED_NORMALISED.items():
        assert by_stem.loc[stem, "mode"] == mode
    assert (manifest["width"] == WIDTH).all() and (manifest["height"] == HEIGHT).all()  # EXIF rotation applied
    assert manifest["mask_coverage"].to_numpy() == pytest.approx(MARK_COVERAGE)
    assert list(manifest["split"]) == [stable_split(pair_id) for pair_id in manifest["id"]]
    assert by_stem.loc["good_0", "bytes"] == (root / "watermarked/good_0.png").stat().st_size

    for row in rows:
        watermarked = Image.open(io.BytesIO(emitted[row["watermarked_key"]]))
        clean = Image.open(io.BytesIO(emitted[row["clean_key"]]))
        mask = Image.open(io.BytesIO(emitted[row["mask_key"]]))
        assert (watermarked.mode, clean.mode, mask.mode) == ("RGB", "RGB", "L")
        assert watermarked.size == clean.size == mask.size == (WIDTH, HEIGHT)
        mask_pixels = np.asarray(mask)
        assert set(np.unique(mask_pixels)) == {0, 255}
        left, top, right, bottom = MARK
        assert mask_pixels[top:bottom, left:right].all()
        # Outside the mark the normalised watermarked image equals the clean one.
        assert (np.asarray(watermarked)[mask_pixels == 0] == np.asarray(clean)[mask_pixels == 0]).all()


def test_mask_file_and_boxes_give_the_mask(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (100, 50), "grey").save(root / "images" / "one.png")
    Image.new("RGB", (100, 50), "grey").save(root / "images" / "none.png")
    (root / "labels" / "one.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (root / "labels" / "none.txt").write_text("")  # an empty label file: no watermark
    source = SourceSpec(name="boxes", kind="local", layout="boxes", path=root)
    emitted: dict[str, bytes] = {}
    rows, rejects = curate_folder(source, root, max_image_pixels=1_000_000, emit=lambda p: emitted.update(p.files), progress=False)
    assert rejects == []
    coverage = {row["id"]: row["mask_coverage"] for row in rows}
    assert coverage == {"boxes/one": pytest.approx(0.2 * 0.4), "boxes/none": 0.0}
    assert all(row["clean_key"] is None and row["clean_sha256"] is None for row in rows)
    assert not any(key.startswith("clean/") for key in emitted)


def test_manifest_frame_follows_the_contract() -> None:
    row = {
        "id": "s/b", "split": "train", "source": "s", "watermarked_key": "watermarked/s/b.png", "clean_key": None,
        "mask_key": "masks/s/b.png", "width": 3, "height": 2, "mode": "RGB", "bytes": 10, "sha256": "ab",
        "clean_sha256": None, "mask_coverage": 0.5,
    }  # fmt: skip
    frame = manifest_frame([row, row | {"id": "s/a"}])
    assert list(frame.columns) == MANIFEST_COLUMNS
    assert list(frame["id"]) == ["s/a", "s/b"]
    assert frame["clean_key"].isna().all()
    assert str(frame["width"].dtype) == "int64" and str(frame["mask_coverage"].dtype) == "float64"


def test_reject_ratio_counts_rejected_inputs_among_all_inputs() -> None:
    assert reject_ratio(8, 2) == pytest.approx(0.2)
    assert reject_ratio(0, 0) == 0.0
    assert reject_ratio(0, 3) == 1.0


def test_a_synthetic_photo_folder_curates_its_matte_as_stored_and_rejects_a_wrong_sized_one(tmp_path: Path) -> None:
    from clearmark.data.dataset import read_alpha
    from clearmark.data.synth import generate_synthetic

    root = tmp_path / "photos"
    generate_synthetic(root, 4, 11, size=64, styles="photo-train", progress=False)
    Image.new("I;16", (32, 64)).save(root / "alpha" / "synth_00003.png")  # half its image's width
    source = SourceSpec(name="p", kind="local", layout="synthetic", path=root)
    emitted: dict[str, bytes] = {}
    rows, rejects = curate_folder(source, root, max_image_pixels=1_000_000, emit=lambda pair: emitted.update(pair.files), progress=False)

    assert [(r["path"], r["reason"]) for r in rejects] == [("alpha/synth_00003.png", "size_mismatch")]
    assert [row["id"] for row in rows] == ["p/synth_00000", "p/synth_00001", "p/synth_00002"]
    for row in rows:
        stem = row["id"].removeprefix("p/")
        assert (row["alpha_key"], row["colour_key"]) == (f"alpha/{row['id']}.png", f"colour/{row['id']}.png")
        assert (row["alpha_mode"], row["alpha_width"], row["alpha_height"]) == ("I;16", 64, 64)
        curated = tmp_path / f"{stem}.png"
        curated.write_bytes(emitted[row["alpha_key"]])
        np.testing.assert_array_equal(read_alpha(curated), read_alpha(root / "alpha" / f"{stem}.png"))  # all 16 bits kept
        colour = Image.open(io.BytesIO(emitted[row["colour_key"]]))
        assert colour.mode == "RGB" and np.array_equal(np.asarray(colour), np.asarray(Image.open(root / "colour" / f"{stem}.png")))
    assert list(manifest_frame(rows).columns) == MANIFEST_COLUMNS
