"""``clearmark remove``: bulk removal without Airflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root ``clearmark`` app."""
    app.command("remove")(remove)


def remove(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="Folder or archive (.zip, .tar, .tar.gz, .tgz) to clean.")],
    output_path: Annotated[Path, typer.Argument(metavar="OUTPUT", help="Folder or archive to write; the suffix picks the format.")],
    model: Annotated[
        str | None, typer.Option(help="Detector folder or MLflow URI; default models:/<registered model>@champion.")
    ] = None,
    inpainter: Annotated[str | None, typer.Option(help="telea (default, CPU) or diffusers.")] = None,
    save_masks: Annotated[bool, typer.Option("--save-masks", help="Also write <OUTPUT>.masks.zip.")] = False,
    threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Mask threshold; default: the detector's.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Detector batch size.")] = None,
) -> None:
    """Detect and inpaint watermarks in every image of INPUT; write OUTPUT plus its report files."""
    from clearmark.model.detector import DetectorError
    from clearmark.removal.archive import ArchiveError
    from clearmark.removal.inpaint import DiffusersModelNotFoundError, UnknownInpainterError
    from clearmark.removal.runner import run_removal
    from clearmark.settings import get_settings
    from clearmark.storage import StorageError

    settings = get_settings()
    try:
        outputs = run_removal(
            settings, input_path, output_path, model=model, inpainter=inpainter, save_masks=save_masks,
            threshold=threshold, batch_size=batch_size, progress=True,
        )  # fmt: skip
    except ArchiveError as exc:
        typer.secho(f"Cannot process {input_path}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except (DetectorError, StorageError, UnknownInpainterError, DiffusersModelNotFoundError) as exc:
        # No champion yet, registry down, or an inpainter without its model: say what to fix.
        typer.secho(f"Cannot start the removal: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    summary = outputs.report.summary()
    typer.echo(
        f"{summary['status']}: {summary['counts']} in {summary['duration_s']} s ({summary['images_per_s']} images/s), "
        f"model {summary['model_version']}"
    )
    typer.echo(f"output: {outputs.output}\nreport: {outputs.report_json}\n        {outputs.report_csv}")
    if outputs.masks:
        typer.echo(f"masks:  {outputs.masks}")

