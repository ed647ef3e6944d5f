"""Detector training inputs: augmentations and the ``torch`` dataset of augmented pairs.

The pairs come from a :class:`clearmark.data.dataset.LocalDataset` (a published curated
version or a local folder, see :func:`clearmark.data.catalog.load_training_data`).  For a
matte network each item also carries the targets of the blend ``J = alpha * W + (1 - alpha) * I``:
the clean image ``I``, the matte ``alpha`` and the colour layer ``W``, where the pair has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clearmark.data.dataset import DatasetError, read_alpha, read_mask, read_rgb

if TYPE_CHECKING:
    from pathlib import Path

    import albumentations as A
    import pandas as pd

    from clearmark.data.dataset import LocalDataset

# Targets that move (and re-colour) with the watermarked image: the blend's three layers.
MATTE_TARGETS = {"clean": "image", "colour": "image", "alpha": "mask"}


@dataclass
class PairAugmentations:
    """Two seeded pipelines: ``shared`` moves and re-colours the image and every target alike,
    ``input_only`` degrades the watermarked input alone and normalises it.

    Geometry must move the targets with the image.  Brightness, saturation, hue and grey are
    per-pixel colour changes that (up to clipping) commute with the blend, so applying them to
    ``J``, ``I`` and ``W`` alike keeps ``J = alpha * W + (1 - alpha) * I`` true.  Noise, blur and
    JPEG happen to real photos after they were marked, and the truth is still the photo and the
    mark as they were: those reach the input only, so the network learns to restore through them.
    """

    shared: A.Compose
    input_only: A.Compose

    def __call__(self, **targets: Any) -> dict[str, Any]:
        out = self.shared(**targets)
        out["image"] = self.input_only(image=out["image"])["image"]
        return out

    def set_random_seed(self, seed: int) -> None:
        self.shared.set_random_seed(seed)
        self.input_only.set_random_seed(seed + 1)


def train_augmentations(image_size: int, seed: int) -> PairAugmentations:
    """Geometric and colour augmentations shared by image, mask and matte; noise, blur and JPEG on the input.

    Crops keep the native resolution (thin strokes stay thin); smaller images are padded.
    """
    import albumentations as A
    import cv2

    shared = A.Compose(
        [
            A.PadIfNeeded(min_height=image_size, min_width=image_size, border_mode=cv2.BORDER_REFLECT_101),
            A.RandomCrop(height=image_size, width=image_size),
            A.HorizontalFlip(p=0.5),
            # Linear for masks too: alpha is a soft matte, and nearest would shift its edges against the images'.
            A.Affine(scale=(0.85, 1.15), rotate=(-10, 10), border_mode=cv2.BORDER_REFLECT_101, mask_interpolation=cv2.INTER_LINEAR, p=0.3),
            # No contrast: it pulls each layer towards its own mean, which breaks the blend.
            A.OneOf([A.ColorJitter(brightness=0.2, contrast=0.0, saturation=0.2, hue=0.03), A.ToGray()], p=0.4),
        ],
        additional_targets=MATTE_TARGETS,
        seed=seed,
    )
    input_only = A.Compose(
        [
            A.GaussNoise(std_range=(0.01, 0.05), p=0.2),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 3)), A.MotionBlur(blur_limit=(3, 5))], p=0.15),
            A.ImageCompression(quality_range=(60, 95), p=0.3),
            A.Normalize(),  # ImageNet mean/std, as Detector.predict_maps does
        ],
        seed=seed + 1,
    )
    return PairAugmentations(shared, input_only)


class PairDataset:
    """``torch`` map-style dataset of augmented pairs, each a dict of tensors.

    Always ``image`` (3 x H x W, ImageNet-normalised) and ``mask`` (1 x H x W, 0 or 1).  With
    ``matte=True`` also ``clean`` (3 x H x W, 0..1), ``alpha`` (1 x H x W, 0..1), ``colour``
    (3 x H x W, 0..1) and the flags ``has_clean`` / ``has_matte``: a pair without a clean image
    or a known matte gets zeros there and a false flag, so the loss leaves those terms out.
    """

    def __init__(self, data: LocalDataset, rows: pd.DataFrame, transform: PairAugmentations, *, matte: bool = False) -> None:
        self.root = data.root
        self.rows = rows[["watermarked_key", "mask_key", "clean_key", "alpha_key", "colour_key"]].to_dict("records")
        self.transform = transform
        self.matte = matte

    def __len__(self) -> int:
        return len(self.rows)

    def _file(self, row: dict[str, Any], column: str) -> Path | None:
        import pandas as pd

        key = row[column]
        return None if key is None or pd.isna(key) else self.root / str(key)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np
        import torch

        row = self.rows[index]
        image = read_rgb(self.root / row["watermarked_key"])
        targets: dict[str, Any] = {"image": image, "mask": read_mask(self.root / row["mask_key"]).astype(np.uint8)}
        clean_file, alpha_file, colour_file = (self._file(row, column) for column in ("clean_key", "alpha_key", "colour_key"))
        has_clean, has_matte = self.matte and clean_file is not None, self.matte and alpha_file is not None and colour_file is not None
        if has_clean:
            targets["clean"] = read_rgb(clean_file)
        if has_matte:
            targets["alpha"], targets["colour"] = read_alpha(alpha_file), read_rgb(colour_file)
        for name, target in targets.items():
            if target.shape[:2] != image.shape[:2]:
                raise DatasetError(f"{row['watermarked_key']} and its {name} differ in size ({image.shape[:2]} vs {target.shape[:2]}); re-run curation.")
        out = self.transform(**targets)
        if has_matte:  # the exact footprint of the interpolated matte: a resampled binary mask loses thin strokes
            out["mask"] = (out["alpha"] > 0).astype(np.uint8)
        item = {"image": torch.from_numpy(out["image"].transpose(2, 0, 1).copy()), "mask": torch.from_numpy(out["mask"][None].astype(np.float32))}
        if self.matte:
            side = item["mask"].shape[1:]

            def layer(name: str, channels: int, scale: float) -> Any:
                if name not in out:
                    return torch.zeros((channels, *side))
                array = out[name][None] if out[name].ndim == 2 else out[name].transpose(2, 0, 1)
                return torch.from_numpy(array.astype(np.float32) / np.float32(scale))

            item |= {
                "clean": layer("clean", 3, 255.0), "alpha": layer("alpha", 1, 1.0), "colour": layer("colour", 3, 255.0),
                "has_clean": torch.tensor(has_clean), "has_matte": torch.tensor(has_matte),
            }  # fmt: skip
        return item
