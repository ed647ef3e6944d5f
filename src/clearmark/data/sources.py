"""Where raw images come from: the sources file, extraction to a local folder, pair discovery.

``config/sources.yaml`` maps dataset names (``lake/curated/<dataset>/``) to sources
(``lake/raw/<source>/``).  Each source has a *kind* saying how to fetch it, one of
:func:`available_sources` (built in: ``local`` and ``synthetic`` here, ``kaggle`` in
:mod:`clearmark.data.kaggle`, ``feedback`` (reviewers' flagged images) in :mod:`clearmark.data.feedback`; a new kind registers with :func:`register_source`), and a
*layout* saying how its files pair up:

``pairs``      ``clean/`` + ``watermarked/`` folders (``name_vN.ext`` variants of
               ``clean/name.ext`` allowed), or flat ``x.jpg`` + ``x_clean.jpg``; masks
               are computed later from the difference (option ``mask_threshold``).
``clwd``       ``Watermarked_image/``, ``Watermark_free_image/``, optional ``Mask/``
               (the CLWD benchmark; other folders such as ``Alpha/`` are not used).
``synthetic``  ``clean/``, ``watermarked/``, ``masks/`` with identical names (and, from the
               photo styles, ``alpha/`` and ``colour/``: the exact matte and colour layer).
``boxes``      YOLO ``images/`` + ``labels/*.txt``: no clean image, boxes only
               (detection-recall evaluation).

Layout folders are found at any depth (``train/``, ``test/`` splits or a wrapping
folder from an archive are fine) and their names match case-insensitively.  Files
inside them that cannot be used become :class:`Reject` rows, never exceptions;
hidden files (``.DS_Store``, ``.complete``) are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clearmark.data.images import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from clearmark.settings import Settings

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
VARIANT_SUFFIX = re.compile(r"_v\d+$", re.IGNORECASE)
CLEAN_SUFFIX = "_clean"
YoloBox = tuple[int, float, float, float, float]


class SourcesError(ValueError):
    """The sources file is missing or invalid, or a layout does not match the files."""


class SourceUnavailable(RuntimeError):
    """A source could not be fetched; the message names the URL or path and what to check."""


# --- the sources file -----------------------------------------------------------------------


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=600, ge=1)
    seed: int = 20261122
    size: int = Field(default=256, ge=64, le=4096)
    styles: Literal["train", "heldout", "photo-train", "photo-heldout"] = Field(default="train", description="clearmark.data.synth styles.")
    jpeg_quality: tuple[int, int] | None = Field(default=None, description="Photo styles: re-compress at a JPEG quality drawn in [low, high].")
    photo_folder: Path | None = Field(
        default=None, description="Photo styles: synthetic marks on the clean photos of this folder (relative paths start at the sources file)."
    )

    def cache_name(self) -> str:
        """The folder name of one generated set: it changes with every option (and photo) that changes the files."""
        import hashlib

        name = f"{self.seed}-{self.count}-{self.size}"
        if (self.styles, self.jpeg_quality, self.photo_folder) == ("train", None, None):
            return name  # the embedded dataset's folder, named as before the other options existed
        identity = [self.styles, str(self.jpeg_quality)]
        if self.photo_folder is not None:  # the user's photos may change: their names, sizes and times count
            from clearmark.data.photos import folder_photos

            identity += [f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}" for path in folder_photos(self.photo_folder)]
        return f"{name}-{self.styles}-{hashlib.sha256(chr(10).join(identity).encode()).hexdigest()[:12]}"


class PairOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mask_threshold: int = Field(default=24, ge=0, le=254, description="Grey levels a pixel must differ by to be watermark.")


class SourceKind:
    """How sources of one kind are checked and fetched; register a subclass with :func:`register_source`."""

    location: ClassVar[str | None] = None  # the SourceSpec field saying where the files are: "handle", "path" or none
    options: ClassVar[type[BaseModel]] = PairOptions  # what the entry's ``options`` may hold

    def check(self, source: SourceSpec) -> None:
        """Raise ``ValueError`` saying what to add when ``source`` lacks what this kind needs."""

    def fetch(self, source: SourceSpec, settings: Settings) -> Path:
        """A local folder holding the source's files (downloaded, generated or as configured)."""
        raise NotImplementedError


_SOURCE_KINDS: dict[str, SourceKind] = {}
Kind = TypeVar("Kind", bound=type[SourceKind])
LOCATION_FIELDS = ("handle", "path")


def register_source(kind: str) -> Callable[[Kind], Kind]:
    """Register a :class:`SourceKind` subclass as the sources file's ``kind: <kind>`` (decorator)."""

    def decorator(cls: Kind) -> Kind:
        if kind in _SOURCE_KINDS:
            raise ValueError(f"A source kind named {kind!r} is already registered; pick another name.")
        _SOURCE_KINDS[kind] = cls()
        return cls

    return decorator


def available_sources() -> list[str]:
    """Source kinds the sources file accepts, sorted."""
    return sorted(_SOURCE_KINDS)


class SourceSpec(BaseModel):
    """One entry under ``datasets.<name>.sources``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Also the raw prefix: lake/raw/<name>/.")
    kind: str = Field(description="How to fetch the files: one of available_sources().")
    layout: Literal["pairs", "clwd", "synthetic", "boxes"]
    handle: str | None = Field(default=None, description="Kaggle dataset 'owner/name[/versions/N]' (kind kaggle).")
    path: Path | None = Field(default=None, description="Folder (kind local); relative paths start at the sources file.")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in _SOURCE_KINDS:
            raise ValueError(f"unknown source kind {kind!r}; choose one of {', '.join(available_sources())}")
        return kind

    @model_validator(mode="after")
    def _check_kind(self) -> SourceSpec:
        kind = _SOURCE_KINDS[self.kind]
        kind.check(self)
        for name in LOCATION_FIELDS:
            if getattr(self, name) is not None and kind.location != name:
                takers = [f"'{other}'" for other in available_sources() if _SOURCE_KINDS[other].location == name]
                raise ValueError(f"'{name}' is only for kind {' or '.join(takers)}")
        kind.options.model_validate(self.options)
        return self

    @property
    def synthetic(self) -> SyntheticOptions:
        """Generator options (kind ``synthetic``)."""
        return SyntheticOptions.model_validate(self.options)

    @property
    def mask_threshold(self) -> int:
        """Difference threshold for masks computed from (watermarked, clean) pairs."""
        pair_options = self.options if _SOURCE_KINDS[self.kind].options is PairOptions else {}
        return PairOptions.model_validate(pair_options).mask_threshold


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    enabled: bool = True
    sources: list[SourceSpec] = Field(min_length=1)


class SourcesConfig(BaseModel):
    """The whole sources file."""

    model_config = ConfigDict(extra="forbid")

    datasets: dict[str, DatasetSpec]

    @field_validator("datasets")
    @classmethod
    def _check_names(cls, datasets: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        seen: dict[str, str] = {}
        for dataset_name, dataset in datasets.items():
            if not re.match(NAME_PATTERN, dataset_name):
                raise ValueError(f"dataset name {dataset_name!r} must be lower-case letters, digits, '.', '_' or '-'")
            for source in dataset.sources:
                if source.name in seen:
                    raise ValueError(f"source name {source.name!r} is used by datasets {seen[source.name]!r} and {dataset_name!r}; names must be unique")
                seen[source.name] = dataset_name
        return datasets

    def enabled(self) -> dict[str, DatasetSpec]:
        """Datasets with ``enabled: true``."""
        return {name: dataset for name, dataset in self.datasets.items() if dataset.enabled}

    def dataset(self, name: str) -> DatasetSpec:
        if name not in self.datasets:
            raise SourcesError(f"dataset {name!r} is not in the sources file; known: {', '.join(sorted(self.datasets))}")
        return self.datasets[name]


def load_sources(path: Path) -> SourcesConfig:
    """Read and validate a sources file; errors name the file and the offending field."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SourcesError(f"Sources file {path} not found; create it (see config/sources.yaml) or set CLEARMARK_SOURCES_FILE.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SourcesError(f"{path} is not valid YAML: {exc}") from exc
    try:
        config = SourcesConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}" for error in exc.errors())
        raise SourcesError(f"{path} is invalid: {problems}") from exc
    for dataset in config.datasets.values():
        for source in dataset.sources:
            if source.path is not None:
                source.path = _from_sources_file(path, source.path)
            if source.options.get("photo_folder") is not None:
                source.options["photo_folder"] = str(_from_sources_file(path, Path(source.options["photo_folder"])))
    return config


def _from_sources_file(sources_file: Path, folder: Path) -> Path:
    """A folder named in the sources file: ``$VARS`` and ``~`` expanded, relative to the file's folder."""
    return (sources_file.parent / Path(os.path.expandvars(folder)).expanduser()).resolve()


# --- extraction -----------------------------------------------------------------------------


def extract(source: SourceSpec, settings: Settings) -> Path:
    """A local folder holding the source's files (downloaded, generated or as configured)."""
    return _SOURCE_KINDS[source.kind].fetch(source, settings)


@register_source("local")
class LocalSource(SourceKind):
    """A folder on this machine (or a mounted volume)."""

    location = "path"

    def check(self, source: SourceSpec) -> None:
        if source.path is None:
            raise ValueError("kind 'local' needs 'path: <folder>'")

    def fetch(self, source: SourceSpec, settings: Settings) -> Path:
        folder = Path(str(source.path))
        if not folder.is_dir():
            raise SourceUnavailable(
                f"Local source {source.name!r}: folder {folder} does not exist or is not a folder; "
                f"check 'path' in {settings.sources_file} and that the volume is mounted."
            )
        if not os.access(folder, os.R_OK | os.X_OK):
            raise SourceUnavailable(f"Local source {source.name!r}: folder {folder} is not readable by this user; fix its permissions.")
        return folder


@register_source("synthetic")
class SyntheticSource(SourceKind):
    """Pairs made by the built-in generator (:mod:`clearmark.data.synth`), cached per options."""

    options = SyntheticOptions

    def check(self, source: SourceSpec) -> None:
        if source.layout != "synthetic":
            raise ValueError("kind 'synthetic' produces layout 'synthetic'")

    def fetch(self, source: SourceSpec, settings: Settings) -> Path:
        from clearmark.data.photos import MissingPhotosError

        try:
            return _synthetic_folder(source.synthetic, settings.cache_dir / "synthetic")
        except MissingPhotosError as exc:
            raise SourceUnavailable(f"Synthetic source {source.name!r}: {exc} (options.photo_folder in {settings.sources_file})") from exc


def _synthetic_folder(options: SyntheticOptions, cache: Path) -> Path:
    """Generate once into a temporary folder, then rename: a crash never leaves a partial set."""
    from clearmark.data.synth import generate_synthetic

    target = cache / options.cache_name()
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cache, prefix=f".{target.name}."))
    try:
        generate_synthetic(
            scratch, options.count, options.seed, size=options.size, styles=options.styles,
            jpeg_quality=options.jpeg_quality, photo_folder=options.photo_folder,
        )  # fmt: skip
        os.rename(scratch, target)
    except OSError:
        if not target.is_dir():  # not a lost race with a concurrent run: a real failure
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


# --- discovery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawPair:
    """One usable input: a watermarked image and what belongs to it."""

    id: str
    watermarked: Path
    clean: Path | None
    mask: Path | None
    boxes: list[YoloBox] | None = None
    alpha: Path | None = None  # the exact matte and the mark's colour layer (synthetic photo styles)
    colour: Path | None = None


@dataclass(frozen=True)
class Reject:
    """A file that cannot be used, with a short reason code and a sentence saying what to do."""

    source: str
    path: str
    reason: str
    detail: str


@dataclass
class Discovery:
    pairs: list[RawPair] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def discover_pairs(source: SourceSpec, root: Path) -> Discovery:
    """Pair up the files of ``source`` found under ``root`` according to its layout."""
    root = Path(root)
    if not root.is_dir():
        raise SourceUnavailable(f"Source {source.name!r}: {root} is not a folder.")
    collector = _Collector(source, root)
    if source.layout == "pairs":
        roots = _layout_roots(root, ("clean", "watermarked"))
        if roots:
            for folders in roots:
                collector.match(folders["watermarked"], folders["clean"], None, strip_variants=True)
        else:
            collector.match_flat(root)
    elif source.layout == "synthetic":
        for folders in _require_roots(source, root, ("clean", "watermarked", "masks")):
            matte = (folders["alpha"], folders["colour"]) if {"alpha", "colour"} <= set(folders) else None
            collector.match(folders["watermarked"], folders["clean"], folders["masks"], mask_required=True, matte_dirs=matte)
    elif source.layout == "clwd":
        for folders in _require_roots(source, root, ("watermarked_image", "watermark_free_image")):
            collector.match(folders["watermarked_image"], folders["watermark_free_image"], folders.get("mask"))
    else:
        for folders in _require_roots(source, root, ("images", "labels")):
            collector.match_boxes(folders["images"], folders["labels"])
    collector.pairs.sort(key=lambda pair: pair.id)
    return Discovery(pairs=collector.pairs, rejects=collector.rejects)


def pair_id(source_name: str, relative_stem: PurePosixPath) -> str:
    """``<source>/<relative path without suffix>`` with every segment made safe for object keys."""
    segments = [re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip(".") or "_" for part in relative_stem.parts]
    return "/".join([source_name, *segments])


def _visible_files(folder: Path) -> list[Path]:
    """Files under ``folder`` (recursive, sorted), hidden files and folders left out."""
    found = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found += [Path(directory) / name for name in sorted(files) if not name.startswith(".")]
    return found


def _child_folders(folder: Path) -> dict[str, Path]:
    return {entry.name.lower(): entry for entry in sorted(folder.iterdir()) if entry.is_dir() and not entry.name.startswith(".")}


def _layout_roots(root: Path, required: tuple[str, ...]) -> list[dict[str, Path]]:
    """Every folder at or below ``root`` holding all ``required`` sub-folders (lower-cased names -> paths)."""
    roots = []
    for directory, subfolders, _ in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        children = _child_folders(Path(directory))
        if all(name in children for name in required):
            roots.append(children)
            subfolders[:] = []  # a layout root's own folders hold data, not further layouts
    return roots


def _require_roots(source: SourceSpec, root: Path, required: tuple[str, ...]) -> list[dict[str, Path]]:
    roots = _layout_roots(root, required)
    if not roots:
        raise SourcesError(
            f"Source {source.name!r} has layout {source.layout!r}, but no folder under {root} contains "
            f"{' + '.join(name + '/' for name in required)}; check 'layout' in the sources file or the downloaded files."
        )
    return roots


class _Collector:
    """Accumulates pairs and rejects for one source, keeping ids unique."""

    def __init__(self, source: SourceSpec, root: Path) -> None:
        self.source = source
        self.root = root
        self.pairs: list[RawPair] = []
        self.rejects: list[Reject] = []
        self._ids: set[str] = set()

    def reject(self, path: Path, reason: str, detail: str) -> None:
        self.rejects.append(Reject(self.source.name, path.relative_to(self.root).as_posix(), reason, detail))

    def add(self, relative_stem: PurePosixPath, watermarked: Path, clean: Path | None, mask: Path | None, boxes: list[YoloBox] | None = None, matte: tuple[Path, Path] | None = None) -> None:
        identifier = pair_id(self.source.name, relative_stem)
        if identifier in self._ids:
            self.reject(watermarked, "duplicate_id", f"another file already maps to id {identifier!r} (same name, other extension?); rename one of them.")
            return
        self._ids.add(identifier)
        self.pairs.append(RawPair(identifier, watermarked, clean, mask, boxes, *(matte or (None, None))))

    def images(self, folder: Path) -> dict[PurePosixPath, Path]:
        """Image files of ``folder`` by relative stem; other files and duplicate stems are rejected."""
        by_stem: dict[PurePosixPath, Path] = {}
        for path in _visible_files(folder):
            stem = PurePosixPath(path.relative_to(folder).with_suffix("").as_posix())
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                self.reject(path, "not_image", f"{path.suffix or 'no extension'} is not an image extension ({', '.join(sorted(IMAGE_SUFFIXES))}); remove the file from the source.")
            elif stem in by_stem:
                self.reject(path, "duplicate_id", f"{by_stem[stem].name} has the same name with another extension; keep only one.")
            else:
                by_stem[stem] = path
        return by_stem

    def _stem_prefix(self, folder: Path) -> PurePosixPath:
        """The layout root's position below the source root (e.g. ``train``), part of every id."""
        return PurePosixPath(folder.parent.relative_to(self.root).as_posix())

    def match(
        self, watermarked_dir: Path, clean_dir: Path, mask_dir: Path | None, *, strip_variants: bool = False, mask_required: bool = False,
        matte_dirs: tuple[Path, Path] | None = None,
    ) -> None:  # fmt: skip
        """Pair each watermarked image with its clean image, mask and (where both files exist) its matte."""
        watermarked, clean = self.images(watermarked_dir), self.images(clean_dir)
        masks = self.images(mask_dir) if mask_dir is not None else {}
        alphas, colours = (self.images(folder) for folder in matte_dirs) if matte_dirs is not None else ({}, {})
        used_clean: set[PurePosixPath] = set()
        used_masks: set[PurePosixPath] = set()
        prefix = self._stem_prefix(watermarked_dir)
        for stem, path in watermarked.items():
            clean_stem = stem if stem in clean or not strip_variants else stem.with_name(VARIANT_SUFFIX.sub("", stem.name))
            if clean_stem not in clean:
                self.reject(path, "unpaired", f"no clean image {clean_dir.name}/{clean_stem}.* for this watermarked image; add it or remove this file.")
                continue
            if mask_required and stem not in masks:
                self.reject(path, "unpaired", f"no mask {mask_dir.name if mask_dir else 'masks'}/{stem}.* for this image; add it or remove the pair.")
                continue
            used_clean.add(clean_stem)
            used_masks.add(stem)
            matte = (alphas[stem], colours[stem]) if stem in alphas and stem in colours else None
            self.add(prefix / stem, path, clean[clean_stem], masks.get(stem), matte=matte)
        for stem, path in clean.items():
            if stem not in used_clean:
                self.reject(path, "unpaired", f"clean image without a watermarked version in {watermarked_dir.name}/; add one or remove it.")
        for stem, path in masks.items():
            if stem not in used_masks:
                self.reject(path, "unpaired", f"mask without a usable watermarked image in {watermarked_dir.name}/; add one or remove it.")

    def match_flat(self, folder: Path) -> None:
        """``x.jpg`` + ``x_clean.jpg`` side by side anywhere below ``folder``."""
        images = self.images(folder)
        clean = {stem.with_name(stem.name[: -len(CLEAN_SUFFIX)]): path for stem, path in images.items() if stem.name.lower().endswith(CLEAN_SUFFIX)}
        watermarked = {stem: path for stem, path in images.items() if not stem.name.lower().endswith(CLEAN_SUFFIX)}
        used: set[PurePosixPath] = set()
        for stem, path in watermarked.items():
            clean_stem = stem if stem in clean else stem.with_name(VARIANT_SUFFIX.sub("", stem.name))
            if clean_stem not in clean:
                self.reject(path, "unpaired", f"no {clean_stem.name}{CLEAN_SUFFIX}.* next to this image; add the clean original or remove this file.")
                continue
            used.add(clean_stem)
            self.add(stem, path, clean[clean_stem], None)
        for stem, path in clean.items():
            if stem not in used:
                self.reject(path, "unpaired", f"clean image without a watermarked {stem.name}.* next to it; add one or remove it.")

    def match_boxes(self, images_dir: Path, labels_dir: Path) -> None:
        images = self.images(images_dir)
        labels = {PurePosixPath(p.relative_to(labels_dir).with_suffix("").as_posix()): p for p in _visible_files(labels_dir) if p.suffix.lower() == ".txt"}
        prefix = self._stem_prefix(images_dir)
        for stem, path in images.items():
            if stem not in labels:
                self.reject(path, "missing_labels", f"no label file {labels_dir.name}/{stem}.txt; add it (an empty file means 'no watermark').")
                continue
            try:
                boxes = parse_yolo_labels(labels[stem].read_text(encoding="utf-8").splitlines())
            except ValueError as exc:
                self.reject(labels[stem], "bad_labels", f"{exc}; fix the line or remove the file.")
                continue
            self.add(prefix / stem, path, None, None, boxes)
        for stem, path in labels.items():
            if stem not in images:
                self.reject(path, "unpaired", f"label file without an image in {images_dir.name}/; add the image or remove the label.")


def parse_yolo_labels(lines: Iterable[str]) -> list[YoloBox]:
    """``class cx cy w h`` per line (normalised 0..1); blank lines ignored."""
    boxes: list[YoloBox] = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            label, *values = int(fields[0]), *(float(value) for value in fields[1:])
        except ValueError:
            raise ValueError(f"line {number}: {line.strip()!r} is not 'class cx cy w h' numbers") from None
        if len(values) != 4 or not all(0.0 <= value <= 1.0 for value in values):
            raise ValueError(f"line {number}: {line.strip()!r} needs 4 values between 0 and 1 after the class")
        centre_x, centre_y, width, height = values
        boxes.append((label, centre_x, centre_y, width, height))
    return boxes
