"""``clearmark remove``: bulk removal without Airflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clearmark.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, user_error
from clearmark.removal.archive import ARCHIVE_SUFFIXES
from clearmark.removal.inpaint import available_inpainters
from clearmark.settings import Settings

_ARCHIVES = ", ".join(sorted(ARCHIVE_SUFFIXES))
EXIT_CODES = (
    f"Exit codes: {EXIT_OK} ok; {EXIT_PARTIAL} partial: some files could not be cleaned and were copied "
    f"unchanged or left out (the report says which); {EXIT_FAILED} failed: nothing was written (unreadable "
    "input, an existing OUTPUT, no permission, no detector or a service down); 2 bad usage."
)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root ``clearmark`` app."""
    app.command("remove", epilog=EXIT_CODES)(remove)


def remove(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help=f"Folder or archive ({_ARCHIVES}) to clean.")],
    output_path: Annotated[
        Path,
        typer.Argument(
            metavar="OUTPUT",
            help=f"Archive ({_ARCHIVES}) or folder (no suffix) to write; the suffix picks the format, the reports go next to it.",
        ),
    ],
    model: Annotated[
        str | None, typer.Option(help="Detector folder or MLflow URI.", show_default="the registry's champion")
    ] = None,
    inpainter: Annotated[
        str | None,
        typer.Option(
            help=f"One of: {', '.join(available_inpainters())} (or set CLEARMARK_INPAINTER).",
            show_default=Settings.model_fields["inpainter"].default,
        ),
    ] = None,
    save_masks: Annotated[bool, typer.Option("--save-masks", help="Also write <OUTPUT>.masks.zip.", show_default="off")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an existing OUTPUT archive and its report files. An existing folder gets this run's "
            "files and keeps every other file. Without it, an existing OUTPUT is refused.",
            show_default="off",
        ),
    ] = False,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, metavar="FLOAT", help="Mask threshold.", show_default="the detector's")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, metavar="N", help="Detector batch size (or set CLEARMARK_REMOVAL_BATCH_SIZE).", show_default="2 on CPU, 8 on GPU"
        ),
    ] = None,
) -> None:
    """Detect and inpaint watermarks in every image of INPUT; write OUTPUT plus its report files."""
    from clearmark.model.detector import DetectorError
    from clearmark.removal.archive import ArchiveError, requested_output_kind
    from clearmark.removal.inpaint import DiffusersModelNotFoundError, UnknownInpainterError
    from clearmark.removal.runner import run_removal
    from clearmark.settings import get_settings
    from clearmark.storage import StorageError

    requested_output_kind(output_path)  # out.rar: refused before anything is loaded
    settings = get_settings()
    try:
        outputs = run_removal(
            settings, input_path, output_path, model=model, inpainter=inpainter, save_masks=save_masks,
            threshold=threshold, batch_size=batch_size, overwrite=overwrite, progress=True,
        )  # fmt: skip
    except ArchiveError as exc:
        typer.secho(f"Cannot process {input_path}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    except (DetectorError, StorageError, UnknownInpainterError, DiffusersModelNotFoundError) as exc:
        # No champion yet, registry down, or an inpainter without its model: say what to fix.
        typer.secho(f"Cannot start the removal: {user_error(exc, settings) or exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    summary = outputs.report.summary()
    typer.echo(
        f"{summary['status']}: {summary['counts']} in {summary['duration_s']} s ({summary['images_per_s']} images/s), "
        f"model {summary['model_version']}"
    )
    typer.echo(f"output: {outputs.output}\nreport: {outputs.report_json}\n        {outputs.report_csv}")
    if outputs.masks:
        typer.echo(f"masks:  {outputs.masks}")
    if summary["status"] == "partial":
        raise typer.Exit(EXIT_PARTIAL)
