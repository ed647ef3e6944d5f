"""``clearmark bench``: measure the platform on this machine (see ``clearmark.bench.run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clearmark.settings import REPO_ROOT


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root ``clearmark`` app."""
    app.command("bench")(bench)


def bench(
    profile: Annotated[str, typer.Option(help="cpu (default: within 15 min on 2 cores), gpu (CUDA), or smoke (seconds).")] = "cpu",
    gpu: Annotated[bool, typer.Option("--gpu", help="Shorthand for --profile gpu.")] = False,
    only: Annotated[str | None, typer.Option(help="Comma-separated sections: removal,detection,quality,collection,training,platform.")] = None,
    model: Annotated[str | None, typer.Option(help="Detector folder or MLflow URI; default: the champion.")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where <date>-<machine>.json and .md go.")] = REPO_ROOT / "bench" / "results",
    start_stack: Annotated[
        bool, typer.Option(help="Start the embedded SeaweedFS and MLflow if they are not running (--no-start-stack for other backends).")
    ] = True,
) -> None:
    """Benchmark removal, detection, quality, training and the platform; each figure next to an in-run baseline."""
    from clearmark.bench.run import PROFILES, SECTIONS, run_benchmarks
    from clearmark.settings import get_settings

    chosen = "gpu" if gpu else profile
    if chosen not in PROFILES:
        raise typer.BadParameter(f"choose one of {', '.join(PROFILES)}", param_hint="--profile")
    sections = tuple(s.strip() for s in only.split(",")) if only else SECTIONS
    if unknown := set(sections) - set(SECTIONS):
        raise typer.BadParameter(f"unknown {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}", param_hint="--only")
    settings = get_settings()
    if start_stack:
        from clearmark.stack.manager import up

        settings = up(settings.home, with_airflow=False, echo=typer.echo)
    try:
        _, table = run_benchmarks(settings, PROFILES[chosen], out_dir=out_dir, model=model, sections=sections, echo=typer.echo)
    except RuntimeError as exc:
        typer.secho(f"Benchmark stopped: {exc} (the finished sections' figures are in {out_dir})", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    typer.echo(table.read_text())
    typer.echo(f"saved: {table.with_suffix('.json')}\n       {table}")
