"""``clearmark preflight``: check a deployment's configuration (used by the compose init services)."""

from __future__ import annotations

import typer


def preflight(
    create_buckets: bool = typer.Option(False, "--create-buckets", help="Create the configured buckets that are missing."),
    skip_mlflow: bool = typer.Option(False, "--skip-mlflow", help="Do not contact the MLflow server (e.g. before it starts)."),
    skip_docker: bool = typer.Option(
        False, "--skip-docker", help="Do not contact the Docker engine of the trainer (CLEARMARK_TRAIN_RUNNER=docker)."
    ),
    mlflow_bucket: bool = typer.Option(
        True,
        "--mlflow-bucket/--no-mlflow-bucket",
        help="Also check the MLflow artifact bucket (off where only the MLflow server holds credentials for it).",
    ),
    require: list[str] = typer.Option(
        [], "--require", help="Another environment variable that must be set (repeatable)."
    ),
    timeout: float = typer.Option(10.0, help="Seconds to wait for each HTTP answer."),
) -> None:
    """Check variables, S3 credentials, buckets, MLflow and the trainer's Docker engine; exit 1 naming what to fix."""
    from pydantic import ValidationError

    from clearmark.deploy.preflight import describe_variable, run_preflight
    from clearmark.settings import Settings, load_settings

    try:
        settings = load_settings()
    except ValidationError as exc:
        for error in exc.errors():
            field_name = str(error["loc"][0]) if error["loc"] else ""
            variable = describe_variable(field_name) if field_name in Settings.model_fields else field_name.upper()
            typer.echo(f"[FAIL] variables: invalid value for {variable}: {error['msg']}", err=True)
        raise typer.Exit(1) from None

    report = run_preflight(
        settings,
        extra_variables=require,
        create_buckets=create_buckets,
        include_mlflow_bucket=mlflow_bucket,
        mlflow=not skip_mlflow,
        docker=not skip_docker,
        timeout=timeout,
    )
    for check in report.checks:
        typer.echo(f"[{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}", err=not check.ok)
    if not report.ok:
        typer.echo(f"preflight failed: fix {', '.join(c.name for c in report.failures)} (see above).", err=True)
        raise typer.Exit(1)
    typer.echo("preflight passed")


def register(app: typer.Typer) -> None:
    """Add ``clearmark preflight`` to the root ``clearmark`` app."""
    app.command("preflight")(preflight)
