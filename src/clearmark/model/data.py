"""Training data for the detector: curated versions or a local folder, splits, augmentations.

Two inputs give the same manifest-shaped table (see docs/architecture.md):

* a published curated version in object storage, read through
  ``clearmark.data.curate.fetch_version`` (downloaded once into the local cache);
* a local folder, either in the curated layout (``manifest.parquet`` + ``watermarked/``
  ``clean/`` ``masks/``) or in the layout ``clearmark synth`` writes
  (``clean/ watermarked/ masks/<stem>.png``), whose pair ids are ``<source>/<stem>``
  exactly as the ETL names them, so the splits match the curated dataset's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from clearmark.data.images import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from collections.abc import Iterator

    import albumentations as A
    import numpy as np
    import pandas as pd

    from clearmark.settings import Settings



class DatasetError(RuntimeError):
    """The requested training data is missing or unusable; the message says what to do."""


@dataclass
class TrainingData:
    """A dataset version available on local disk: ``root / row.watermarked_key`` is a file."""

    root: Path
    manifest: pd.DataFrame
    dataset: str
    version: str
    manifest_sha256: str
    location: str  # where it came from, for the run's tags

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split (``train``/``val``/``test``) that have a mask; error if none."""
        rows = self.manifest[(self.manifest["split"] == name) & self.manifest["mask_key"].notna()]
        if rows.empty:
            raise DatasetError(
                f"Split {name!r} of {self.dataset} {self.version} is empty ({len(self.manifest)} rows in all); "
                "publish a larger dataset version (at least ~10 pairs per split) or choose another split."
            )
        return rows.reset_index(drop=True)


def _frame_sha256(frame: pd.DataFrame) -> str:
    """Stable hash of a manifest's content (order-independent)."""
    ordered = frame.sort_values("id").reset_index(drop=True)
    return hashlib.sha256(ordered.to_csv(index=False).encode()).hexdigest()


def synthetic_folder_manifest(folder: Path, source: str = "synthetic") -> pd.DataFrame:
    """Manifest rows for a ``clearmark synth`` folder; ids ``<source>/<stem>``, stable splits."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from clearmark.data.sources import pair_id as make_pair_id
    from clearmark.data.splits import stable_split
    from clearmark.storage import sha256_file

    rows: list[dict[str, Any]] = []
    for image in sorted((folder / "watermarked").iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask, clean = folder / "masks" / f"{image.stem}.png", folder / "clean" / image.name
        if not mask.is_file():
            continue  # a pair without a mask cannot train a detector
        pair_id = make_pair_id(source, PurePosixPath(image.stem))
        with Image.open(image) as opened:
            width, height, mode = opened.width, opened.height, opened.mode
        with Image.open(mask) as opened_mask:
            coverage = float((np.asarray(opened_mask) > 127).mean())
        rows.append(
            {
                "id": pair_id,
                "split": stable_split(pair_id),
                "source": source,
                "watermarked_key": str(image.relative_to(folder)),
                "clean_key": str(clean.relative_to(folder)) if clean.is_file() else None,
                "mask_key": str(mask.relative_to(folder)),
                "width": width,
                "height": height,
                "mode": mode,
                "bytes": image.stat().st_size,
                "sha256": sha256_file(image),
                "clean_sha256": sha256_file(clean) if clean.is_file() else None,
                "mask_coverage": coverage,
            }
        )
    return pd.DataFrame(rows)


def load_local_folder(folder: Path, dataset: str, source: str = "synthetic") -> TrainingData:
    """A local folder in the curated layout or the ``clearmark synth`` layout."""
    import pandas as pd

    folder = Path(folder).resolve()
    if (folder / "manifest.parquet").is_file():
        manifest = pd.read_parquet(folder / "manifest.parquet")
    elif (folder / "watermarked").is_dir() and (folder / "masks").is_dir():
        manifest = synthetic_folder_manifest(folder, source)
    else:
        raise DatasetError(
            f"{folder} is neither a curated version (manifest.parquet) nor a `clearmark synth` folder "
            "(watermarked/ and masks/); point --data-dir at one, or drop it to read the curated dataset."
        )
    if manifest.empty:
        raise DatasetError(f"{folder} holds no (watermarked, mask) pairs; generate some with `clearmark synth`.")
    digest = _frame_sha256(manifest)
    return TrainingData(folder, manifest, dataset, f"local-{digest[:12]}", digest, str(folder))


def load_curated(settings: Settings, dataset: str, version: str | None) -> TrainingData:
    """A published curated version (``None``: the latest), fetched into the local cache."""
    from clearmark.data import curate
    from clearmark.storage import ObjectStore

    store = ObjectStore(settings)
    try:
        version = version or curate.latest_version(store, dataset)
        local = curate.fetch_version(store, dataset, version)
    except curate.DatasetNotFoundError as exc:
        raise DatasetError(f"{exc} Or train on a local folder with --data-dir.") from exc
    return TrainingData(Path(local.root), local.manifest, dataset, version, local.manifest_sha256, f"s3://{settings.lake_bucket}/curated/{dataset}/{version}")


def synthetic_source_name(settings: Settings, dataset: str) -> str:
    """Name of the synthetic source of ``dataset`` in the sources file (ids start with it)."""
    from clearmark.data.sources import SourcesError, load_sources

    try:
        sources = load_sources(settings.sources_file).dataset(dataset).sources
    except (SourcesError, KeyError, LookupError):
        return dataset
    synthetic = [source.name for source in sources if source.kind == "synthetic"]
    return synthetic[0] if len(synthetic) == 1 else dataset


def load_training_data(settings: Settings, dataset: str | None = None, version: str | None = None, data_dir: Path | None = None) -> TrainingData:
    """The data a training or evaluation run reads: ``data_dir`` if given, else the curated version.

    ``version`` ``None``, ``""`` or ``"latest"`` means the latest published version.

    Pairs of a ``clearmark synth`` folder get the ids the ETL would give them as the
    dataset's synthetic source, so their splits match the curated version's.
    """
    dataset = dataset or settings.dataset
    if data_dir is not None:
        return load_local_folder(Path(data_dir), dataset, synthetic_source_name(settings, dataset))
    return load_curated(settings, dataset, None if version in (None, "", "latest") else version)


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB (curated files are already normalised 8-bit RGB)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    """H x W bool (255 = watermark)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 127


def iter_pairs(data: TrainingData, rows: pd.DataFrame) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(id, watermarked RGB, mask) for each row, read lazily."""
    for row in rows.itertuples(index=False):
        yield row.id, read_rgb(data.root / row.watermarked_key), read_mask(data.root / row.mask_key)


def train_augmentations(image_size: int, seed: int) -> A.Compose:
    """Geometric, colour, noise, blur and JPEG augmentations, the same geometry on image and mask.

    Crops keep the native resolution (thin strokes stay thin); smaller images are padded.
    """
    import albumentations as A
    import cv2

    return A.Compose(
        [
            A.PadIfNeeded(min_height=image_size, min_width=image_size, border_mode=cv2.BORDER_REFLECT_101),
            A.RandomCrop(height=image_size, width=image_size),
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.85, 1.15), rotate=(-10, 10), border_mode=cv2.BORDER_REFLECT_101, p=0.3),
            A.OneOf([A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03), A.ToGray()], p=0.4),
            A.GaussNoise(std_range=(0.01, 0.05), p=0.2),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 3)), A.MotionBlur(blur_limit=(3, 5))], p=0.15),
            A.ImageCompression(quality_range=(60, 95), p=0.3),
            A.Normalize(),  # ImageNet mean/std, as Detector.predict_proba does
        ],
        seed=seed,
    )


class PairDataset:
    """``torch`` map-style dataset of augmented (image C x H x W float, mask 1 x H x W float) pairs."""

    def __init__(self, data: TrainingData, rows: pd.DataFrame, transform: A.Compose) -> None:
        self.root = data.root
        self.images = [str(k) for k in rows["watermarked_key"]]
        self.masks = [str(k) for k in rows["mask_key"]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import numpy as np
        import torch

        image = read_rgb(self.root / self.images[index])
        mask = read_mask(self.root / self.masks[index]).astype(np.uint8)
        if image.shape[:2] != mask.shape:
            raise DatasetError(f"{self.images[index]} and its mask differ in size ({image.shape[:2]} vs {mask.shape}); re-run curation.")
        out = self.transform(image=image, mask=mask)
        return torch.from_numpy(out["image"].transpose(2, 0, 1).copy()), torch.from_numpy(out["mask"][None].astype(np.float32))
