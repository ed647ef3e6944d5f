"""The ``clearmark`` command: one sub-command per lifecycle stage.

Each stage module keeps its heavy imports (torch, pandas, mlflow, ...) inside its
commands, so ``clearmark --help`` and DAG parsing stay fast.
"""

from __future__ import annotations

import typer

from clearmark.bench import cli as bench_cli
from clearmark.data import cli as data_cli
from clearmark.deploy import cli as deploy_cli
from clearmark.drift import cli as drift_cli
from clearmark.model import cli as model_cli
from clearmark.removal import cli as removal_cli
from clearmark.stack import cli as stack_cli

app = typer.Typer(
    name="clearmark",
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
