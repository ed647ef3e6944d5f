"""The ``clearmark`` command: one sub-command per lifecycle stage.

Each stage module keeps its heavy imports (torch, pandas, mlflow, ...) inside its
commands, so ``clearmark --help`` and DAG parsing stay fast.  Errors a user can fix
(:func:`clearmark.errors.user_error`) end as one line ``error: ...`` and exit code 1, from
any command; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup

from clearmark.bench import cli as bench_cli
from clearmark.data import cli as data_cli
from clearmark.deploy import cli as deploy_cli
from clearmark.drift import cli as drift_cli
from clearmark.errors import EXIT_FAILED, user_error
from clearmark.model import cli as model_cli
from clearmark.removal import cli as removal_cli
from clearmark.stack import cli as stack_cli


class _ClearmarkGroup(TyperGroup):
    """The root command group: turns the errors :func:`user_error` knows into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, typer.Exit, typer.Abort):
            raise  # click's and typer's own ends: usage errors and exits a command chose
        except Exception as exc:
            from clearmark.settings import get_settings

            message = user_error(exc, get_settings())
            if message is None:
                raise
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(EXIT_FAILED) from exc


app = typer.Typer(
    name="clearmark",
    cls=_ClearmarkGroup,
    help="Remove visible watermarks from image archives: ETL, training, removal and drift, with or without Airflow.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _log_to_stderr() -> None:
    """clearmark's own log records (progress bars off a terminal, notices) go to stderr."""
    from clearmark.progress import log_to_stderr

    log_to_stderr()


for stage in (stack_cli, deploy_cli, data_cli, model_cli, removal_cli, drift_cli, bench_cli):
    stage.register(app)

if __name__ == "__main__":
    app()
