"""Training data: local folders read like curated versions, stable splits, augmentations."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from clearmark.data.sources import pair_id
from clearmark.data.splits import stable_split
from clearmark.data.synth import generate_synthetic
from clearmark.model.data import DatasetError, PairDataset, load_local_folder, load_training_data, train_augmentations
from clearmark.settings import load_settings


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synth")
    generate_synthetic(folder, 12, 5, size=64, progress=False)
    return folder


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
    again = load_training_data(settings, "synthetic", data_dir=synth_folder)
    assert again.version == data.version  # same files, same version


def test_empty_split_and_wrong_folder_say_what_to_do(synth_folder: Path, tmp_path: Path) -> None:
    data = load_local_folder(synth_folder, "synthetic")
    only_train = data.manifest[data.manifest["split"] == "train"]
    data.manifest = only_train
    with pytest.raises(DatasetError, match="Split 'test' .* is empty"):
        data.split("test")
    with pytest.raises(DatasetError, match="clearmark synth"):
        load_local_folder(tmp_path, "synthetic")


def test_augmented_pairs_keep_image_and_mask_aligned(synth_folder: Path) -> None:
    data = load_local_folder(synth_folder, "synthetic")
    rows = data.manifest.head(4)
    dataset = PairDataset(data, rows, train_augmentations(32, seed=0))
    images = [dataset[i] for i in range(len(dataset))]
    for image, mask in images:
        assert tuple(image.shape) == (3, 32, 32) and tuple(mask.shape) == (1, 32, 32)
        assert set(np.unique(mask.numpy())) <= {0.0, 1.0}
        assert abs(float(image.mean())) < 3  # ImageNet-normalised, not 0..255
    # A seeded pipeline replays the same augmentations.
    replay = PairDataset(data, rows, train_augmentations(32, seed=0))
    first_image, first_mask = replay[0]
    assert np.array_equal(first_image.numpy(), images[0][0].numpy()) and np.array_equal(first_mask.numpy(), images[0][1].numpy())


def test_geometry_moves_mask_with_image() -> None:
    """With colour effects off, the watermark pixels stay exactly where the mask says."""
    import albumentations as A

    geometric = [t for t in train_augmentations(48, seed=1).transforms if isinstance(t, A.PadIfNeeded | A.RandomCrop | A.HorizontalFlip)]
    pipeline = A.Compose(geometric, seed=1)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 5:50] = 1
    image = np.repeat((mask * 255)[..., None], 3, axis=2)
    for _ in range(5):
        out = pipeline(image=image, mask=mask)
        assert np.array_equal(out["image"][..., 0] > 127, out["mask"] > 0)


def test_training_scale_is_the_median_long_side_rounded_up_to_32(synth_folder: Path) -> None:
    import pandas as pd

    from clearmark.model.train import training_scale

    # Long sides 640, 1000, 900: the median, 900, rounds up to 928.
    assert training_scale(pd.DataFrame({"width": [640, 1000, 300], "height": [480, 700, 900]})) == 928
    assert training_scale(pd.DataFrame({"width": [], "height": []})) is None
    data = load_training_data(load_settings(home=synth_folder.parent / "home"), "synthetic", data_dir=synth_folder)
    assert training_scale(data.split("train")) == 64
