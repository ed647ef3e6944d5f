"""``clearmark remove``: bulk removal without Airflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clearmark.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, user_error
from clearmark.model.backends import AUTO, available_backends
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
    app.command("field-quality")(field_quality)


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
            help=f"Restorer or inpainter, one of: {', '.join(available_inpainters())} (or set CLEARMARK_INPAINTER).",
            show_default=Settings.model_fields["inpainter"].default,
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help=f"Inference backend that runs the detector, one of: {AUTO} (the best this machine has), "
            f"{', '.join(available_backends())} (or set CLEARMARK_INFERENCE_BACKEND).",
            show_default=Settings.model_fields["inference_backend"].default,
        ),
    ] = None,
    save_masks: Annotated[bool, typer.Option("--save-masks", help="Also write <OUTPUT>.masks.zip.", show_default="off")] = False,
    review: Annotated[
        bool,
        typer.Option(
            "--review",
            help="Also write <OUTPUT>.review/index.html: original | mask | cleaned of the most doubtful images, "
            "a before/after view; it opens as a file (implies --save-masks).",
            show_default="off",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an existing OUTPUT archive and its report files. An existing folder gets this run's "
            "files and keeps every other file. Without it, an existing OUTPUT is refused.",
            show_default="off",
        ),
    ] = False,
    shared_mark: Annotated[
        bool,
        typer.Option(
            "--shared-mark",
            help="Estimate the mark images share, unblend with it, write <OUTPUT>.watermark.png "
            "(experimental; or set CLEARMARK_SHARED_MARK).",
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
    """Detect watermarks in every image of INPUT and restore what is under them; write OUTPUT plus its report files."""
    from clearmark.model.backends import BackendError
    from clearmark.model.detector import DetectorError
    from clearmark.removal.archive import ArchiveError, check_output, requested_output_kind
    from clearmark.removal.inpaint import DiffusersModelNotFoundError, UnknownInpainterError
    from clearmark.removal.review import review_next_to, review_removal
    from clearmark.removal.runner import run_removal
    from clearmark.settings import get_settings
    from clearmark.storage import StorageError

    requested_output_kind(output_path)  # out.rar: refused before anything is loaded
    if review:
        check_output(review_next_to(output_path), folder=True, overwrite=overwrite)
        save_masks = True  # the review's mask panel
    settings = get_settings()
    try:
        outputs = run_removal(
            settings, input_path, output_path, model=model, inpainter=inpainter, backend=backend, save_masks=save_masks,
            threshold=threshold, batch_size=batch_size, overwrite=overwrite, progress=True, shared_mark=shared_mark or None,
        )  # fmt: skip
    except ArchiveError as exc:
        typer.secho(f"error: cannot process {input_path}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    except (DetectorError, StorageError, UnknownInpainterError, DiffusersModelNotFoundError, BackendError) as exc:
        # No champion yet, registry down, an inpainter without its model or a backend this machine lacks: say what to fix.
        typer.secho(f"error: cannot start the removal: {user_error(exc, settings) or exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    summary = outputs.report.summary()
    typer.echo(
        f"{summary['status']}: {summary['counts']} in {summary['duration_s']} s ({summary['images_per_s']} images/s), "
        f"model {summary['model_version']} on {summary['backend']}, {summary['inpainter']}: {summary['restorations']}"
    )
    typer.echo(f"output: {outputs.output}\nreport: {outputs.report_json}\n        {outputs.report_csv}")
    if outputs.masks:
        typer.echo(f"masks:  {outputs.masks}")
    for watermark in outputs.watermarks:
        typer.echo(f"shared mark: {watermark}")
    if review:
        typer.echo(f"review: {review_removal(input_path, outputs)}")
    if summary["status"] == "partial":
        raise typer.Exit(EXIT_PARTIAL)


def field_quality() -> None:
    """Count reviewers' flags per model version and tag each registered MLflow model version with them."""
    from clearmark.removal.field_quality import log_field_quality
    from clearmark.settings import get_settings

    result = log_field_quality(get_settings())
    for version, figures in result["logged"].items():
        typer.echo(f"{result['model']} version {version}: {figures}")
    for version in result["not_registered"]:
        typer.echo(f"version {version}: flagged, but not a version of {result['model']}; not logged")
    if not result["logged"] and not result["not_registered"]:
        typer.echo("no flags yet: reviewers flag images on the review pages (Airflow UI, Reviews & drift)")
