"""Datasets on local disk: a `clearmark synth` folder reads like the curated version of the same files."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clearmark.data.catalog import load_training_data
from clearmark.data.curate import curate_folder
from clearmark.data.dataset import DatasetError, load_local_folder
from clearmark.data.manifest import MANIFEST_COLUMNS, manifest_frame
from clearmark.data.sources import SourceSpec, pair_id
from clearmark.data.splits import stable_split
from clearmark.settings import load_settings

KEY_COLUMNS = ["watermarked_key", "clean_key", "mask_key"]


def test_synth_folder_gets_the_etl_ids_and_splits(synth_folder: Path) -> None:
    settings = load_settings(home=synth_folder.parent / "home")
    data = load_training_data(settings, "synthetic", data_dir=synth_folder)
    manifest = data.manifest
    assert len(manifest) == 12
    # Same ids as the ETL gives the embedded dataset's synthetic source (config/sources.yaml).
    assert manifest["id"].tolist() == [pair_id("synthetic-default", PurePosixPath(f"synth_{i:05d}")) for i in range(12)]
    assert manifest["split"].tolist() == [stable_split(i) for i in manifest["id"]]
    assert (data.root / manifest["watermarked_key"][0]).is_file()
    assert manifest["mask_coverage"].between(0.0, 1.0).all() and manifest["mask_coverage"].gt(0).all()
    assert data.version.startswith("local-") and len(data.manifest_sha256) == 64
    assert data.location == str(synth_folder.resolve())
    again = load_training_data(settings, "synthetic", data_dir=synth_folder)
    assert again.version == data.version  # same files, same version


def test_synth_folder_rows_equal_the_curated_rows_of_the_same_files(synth_folder: Path) -> None:
    """One row builder: only the keys differ (original files here, normalised PNGs in the lake)."""
    local = load_local_folder(synth_folder, "synthetic", source="s")
    source = SourceSpec(name="s", kind="local", layout="synthetic", path=synth_folder)
    rows, rejects = curate_folder(source, synth_folder, max_image_pixels=1_000_000, emit=lambda pair: None, progress=False)
    assert rejects == []
    curated = manifest_frame(rows)
    assert list(local.manifest.columns) == MANIFEST_COLUMNS
    facts = [column for column in MANIFEST_COLUMNS if column not in KEY_COLUMNS]
    pd.testing.assert_frame_equal(local.manifest[facts], curated[facts])
    assert curated["watermarked_key"][0] == f"watermarked/{curated['id'][0]}.png"
    assert local.manifest["watermarked_key"][0] == "watermarked/synth_00000.png"


def test_pairs_yield_each_rows_image_and_mask(synth_folder: Path) -> None:
    data = load_local_folder(synth_folder, "synthetic", source="synthetic")
    rows = data.manifest.tail(3)
    pairs = list(data.pairs(rows))
    assert [pair_id for pair_id, _, _ in pairs] == rows["id"].tolist()
    for (_, rgb, mask), key in zip(pairs, rows["mask_key"], strict=True):
        assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
        assert mask.dtype == bool and np.array_equal(mask, np.asarray(Image.open(synth_folder / key)) > 127)


def test_empty_split_and_wrong_folder_say_what_to_do(synth_folder: Path, tmp_path: Path) -> None:
    data = load_local_folder(synth_folder, "synthetic", source="synthetic")
    data.manifest = data.manifest[data.manifest["split"] == "train"]
    with pytest.raises(DatasetError, match="Split 'test' .* is empty"):
        data.split("test")
    with pytest.raises(DatasetError, match="clearmark synth"):
        load_local_folder(tmp_path, "synthetic", source="synthetic")
