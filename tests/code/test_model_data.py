"""Detector training inputs: augmentations and the torch dataset of pairs (local datasets: test_data_dataset.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearmark.data.catalog import load_training_data
from clearmark.data.dataset import load_local_folder
from clearmark.model.data import PairDataset, train_augmentations
from clearmark.settings import load_settings


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
