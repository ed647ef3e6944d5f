"""``clearmark synth``, ``clearmark etl ...`` and ``clearmark datasets``.

Each command prints a JSON summary on stdout (progress bars go to stderr); a known
failure prints its message, which says what to do, and exits with status 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    from clearmark.settings import Settings

etl_app = typer.Typer(help="Nightly ETL: extract -> load raw -> curate -> validate -> publish.", no_args_is_help=True)

DatasetOption = Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset from the sources file (default: CLEARMARK_DATASET).")]
TsOption = Annotated[str | None, typer.Option("--ts", help="Logical timestamp of the run (Airflow's {{ ts }}), recorded in the outputs.")]
VersionOption = Annotated[
    str | None, typer.Option("--version", "-v", help="Curated version (default: the one the current raw data curates to).")
]


def _emit(run: Callable[[], Any]) -> None:
    """Run a command body, print its result as JSON, turn known errors into a message and exit 1."""
    from clearmark.data.etl import DataValidationError
    from clearmark.data.layout import CurationError, DatasetNotFoundError
    from clearmark.data.marks import MissingFontsError
    from clearmark.data.photos import MissingPhotosError
    from clearmark.data.raw import RawLoadError
    from clearmark.data.sources import SourceUnavailable
    from clearmark.storage import StorageError

    known = (CurationError, DatasetNotFoundError, DataValidationError, MissingFontsError, MissingPhotosError, RawLoadError, SourceUnavailable, StorageError, ValueError)
    try:
        result = run()
    except known as exc:
        typer.echo(f"error: {exc.args[0] if exc.args else exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(result, indent=2, default=str))


def _settings_and_dataset(dataset: str | None) -> tuple[Settings, str]:
    from clearmark.settings import get_settings

    settings = get_settings()
    return settings, dataset or settings.dataset


def _current_version(settings: Settings, dataset: str, ts: str | None) -> str:
    """The version the lake's raw data curates to (curation is idempotent, so this is cheap when it exists)."""
    from clearmark.data.etl import curate_step

    return str(curate_step(settings, dataset, ts=ts)["version"])


def _quality_range(text: str | None) -> tuple[int, int] | None:
    """``--jpeg-quality 70,98`` -> (70, 98)."""
    if text is None:
        return None
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--jpeg-quality takes two whole numbers LO,HI such as 70,98, got {text!r}.") from None
    return low, high


def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; gets clean/, watermarked/ and masks/ (photo styles: also alpha/ and colour/).")],
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Number of images.")] = 200,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Random seed: same seed, same images.")] = 0,
    size: Annotated[int, typer.Option("--size", min=64, help="Side of the square images in pixels.")] = 256,
    styles: Annotated[
        Literal["train", "heldout", "photo-train", "photo-heldout"],
        typer.Option(
            "--styles",
            help="train / heldout: procedural and scikit-image backgrounds (heldout: fonts, logos and opacities train never uses); "
            "photo-train / photo-heldout: mark families seen in practice on real photographs (disjoint photos, fonts and shapes), "
            "with the exact matte in alpha/ and the mark's colour in colour/.",
        ),
    ] = "train",
    jpeg_quality: Annotated[
        str | None, typer.Option("--jpeg-quality", metavar="LO,HI", help="Photo styles: re-compress each watermarked image at a JPEG quality drawn in LO..HI, e.g. 70,98.")
    ] = None,
    photos: Annotated[
        Path | None, typer.Option("--photos", help="Photo styles: draw the marks on the clean photos of this folder instead of the packaged ones.")
    ] = None,
) -> None:
    """Generate a deterministic synthetic (clean, watermarked, mask) set, fully offline."""
    from clearmark.data.synth import STYLE_SETS, generate_synthetic

    def body() -> dict[str, Any]:
        summary = generate_synthetic(out, count, seed, size=size, styles=styles, jpeg_quality=_quality_range(jpeg_quality), photo_folder=photos)
        return {
            "out": str(summary.out_dir), "count": summary.count, "seed": seed, "size": size, "kinds": summary.kinds(),
            "styles": summary.styles, "jpeg_quality": jpeg_quality, "photos": str(photos) if photos else None,
            **({"style_set": STYLE_SETS[styles].describe()} if styles in STYLE_SETS else {}),
        }  # fmt: skip

    _emit(body)


@etl_app.command("run")
def etl_run(dataset: DatasetOption = None, ts: TsOption = None) -> None:
    """Run the whole ETL for one dataset in this process (what the Airflow DAG does task by task)."""
    from clearmark.data.etl import run_etl

    settings, name = _settings_and_dataset(dataset)
    _emit(lambda: run_etl(settings, name, ts=ts))


@etl_app.command("extract")
def etl_extract(dataset: DatasetOption = None, ts: TsOption = None) -> None:
    """Bring every source of the dataset to a local folder."""
    from clearmark.data.etl import extract_step

    settings, name = _settings_and_dataset(dataset)
    _emit(lambda: extract_step(settings, name, ts=ts))


@etl_app.command("load-raw")
def etl_load_raw(dataset: DatasetOption = None, ts: TsOption = None) -> None:
    """Extract (re-using earlier downloads), then mirror the sources into lake/raw/ (changed files only)."""
    from clearmark.data.etl import extract_step, load_raw_step

    settings, name = _settings_and_dataset(dataset)
    _emit(lambda: load_raw_step(settings, name, extract_step(settings, name, ts=ts), ts=ts))


@etl_app.command("curate")
def etl_curate(dataset: DatasetOption = None, ts: TsOption = None) -> None:
    """Build the curated version from the raw objects (or report the existing one)."""
    from clearmark.data.etl import curate_step

    settings, name = _settings_and_dataset(dataset)
    _emit(lambda: curate_step(settings, name, ts=ts))


@etl_app.command("validate")
def etl_validate(dataset: DatasetOption = None, version: VersionOption = None, ts: TsOption = None) -> None:
    """Validate a curated version with Great Expectations and upload its Data Docs."""
    from clearmark.data.etl import validate_step

    settings, name = _settings_and_dataset(dataset)
    _emit(lambda: validate_step(settings, name, version or _current_version(settings, name, ts), ts=ts))


@etl_app.command("publish")
def etl_publish(dataset: DatasetOption = None, version: VersionOption = None, ts: TsOption = None) -> None:
    """Publish a validated version (writes _PUBLISHED.json, then LATEST)."""
    from clearmark.data.etl import publish_step

    settings, name = _settings_and_dataset(dataset)
    _emit(lambda: publish_step(settings, name, version or _current_version(settings, name, ts), ts=ts))


@etl_app.command("list")
def etl_list(dataset: DatasetOption = None) -> None:
    """List published versions with their row counts (all datasets unless --dataset)."""
    from clearmark.data.catalog import list_published
    from clearmark.data.etl import object_store
    from clearmark.settings import get_settings

    _emit(lambda: list_published(object_store(get_settings()), dataset))


def register(app: typer.Typer) -> None:
    """Add ``synth``, ``etl`` and ``datasets`` to the root ``clearmark`` app."""
    app.command("synth")(synth)
    app.add_typer(etl_app, name="etl")
    app.command("datasets", help="List published dataset versions with their row counts (same as `etl list`).")(etl_list)
