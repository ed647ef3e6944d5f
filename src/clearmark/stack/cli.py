"""``clearmark stack up|down|status`` and ``clearmark demo`` (the README's main job)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from clearmark.settings import default_home

stack_app = typer.Typer(help="The embedded stack: SeaweedFS (S3), MLflow and Airflow on 127.0.0.1.", no_args_is_help=True)

HomeOption = typer.Option(None, "--home", help="State folder of the stack.", show_default="$CLEARMARK_HOME, else ./.clearmark")


@contextmanager
def _stack_errors() -> Iterator[None]:
    """A taken port, a full disk or a service that would not start: the advice, not a traceback."""
    from clearmark.stack.airflow_api import AirflowError
    from clearmark.stack.services import StackError
    from clearmark.storage import StorageError

    try:
        yield
    except (StackError, StorageError, AirflowError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@stack_app.command("up")
def up_command(home: Path | None = HomeOption, airflow: bool = typer.Option(True, help="Also start Airflow standalone.")) -> None:
    """Start every service that is not running yet; a second `up` is harmless."""
    from clearmark.stack.manager import up

    with _stack_errors():
        up(home or default_home(), with_airflow=airflow, echo=typer.echo)
    status_command(home)


@stack_app.command("down")
def down_command(home: Path | None = HomeOption) -> None:
    """Stop exactly the processes `up` started (by process id); the data stays."""
    from clearmark.stack.manager import down

    down(home or default_home(), echo=typer.echo)


@stack_app.command("status")
def status_command(home: Path | None = HomeOption) -> None:
    """Each service's health, URL and how to log in."""
    from clearmark.stack.manager import status

    home = (home or default_home()).resolve()
    for s in status(home):
        if s.other:
            typer.echo(
                f"{s.name:<10} {'port in use':<24} pid {'-':<8} {s.url:<28} {s.other} answers there, not this home's "
                f"({home}): use that stack (--home or CLEARMARK_HOME) or stop it before `clearmark stack up` here"
            )
            continue
        state = "healthy" if s.healthy else ("running, not healthy yet" if s.pid else "stopped")
        typer.echo(f"{s.name:<10} {state:<24} pid {s.pid or '-':<8} {s.url:<28} {s.login}")


def demo(
    home: Path | None = HomeOption,
    timeout: float = typer.Option(3600, help="Seconds to wait for all DAG runs."),
) -> None:
    """Bring the stack up and run the main job: nightly ETL, training with the gate, a sample archive through the inbox."""
    from clearmark.stack.demo import run_demo

    with _stack_errors():
        run_demo(home or default_home(), timeout=timeout, echo=typer.echo)


def register(app: typer.Typer) -> None:
    """Add `stack` and `demo` to the root app."""
    app.add_typer(stack_app, name="stack")
    app.command("demo")(demo)
