"""Training options are declared once (TrainConfig) and offered alike by `clearmark train` and the train DAG's form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from clearmark.cli import app
from clearmark.model.train_config import TrainConfig, cli_arguments, config_from_cli, train_options
from clearmark.settings import Settings, get_settings

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "clearmark_train.py"


@pytest.fixture(scope="module")
def form() -> dict:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAG_FILE)).dags["clearmark_train"]
    return {name: dag.params.get_param(name) for name in dag.params}


def cli_options() -> dict[str, Any]:
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params if p.param_type_name == "option" and p.name != "help"}


def resolved(default: object, name: str, settings: Settings) -> object:
    """What a None CLI default stands for when a Settings field supplies it (--dataset: settings.dataset)."""
    spec = next(o.spec for o in train_options() if o.name == name)
    return getattr(settings, spec.settings_default) if default is None and spec.settings_default else default


def test_every_cli_option_has_a_form_field_with_the_same_default_or_says_why_not(form: dict) -> None:
    options = cli_options()
    local_only = {o.name for o in train_options() if not o.in_form}
    assert set(options) == set(form) | local_only  # and vice versa: no form field the CLI lacks
    assert local_only == {"data_dir", "resume", "encoder_weights", "checkpoint_dir", "run_name"}
    for name, param in form.items():
        assert resolved(options[name].default, name, get_settings()) == param.value, name
        assert param.description, name


def test_every_cli_option_is_described_with_its_default() -> None:
    for name, cli_option in cli_options().items():
        assert cli_option.help, name
        assert cli_option.show_default not in (None, False), name


def test_form_defaults_give_the_cli_defaults_back(form: dict) -> None:
    """The runner arguments built from the untouched form configure the same run as `clearmark train` without options."""
    arguments = cli_arguments({name: param.value for name, param in form.items()})
    parsed = dict(zip(arguments[::2], arguments[1::2], strict=True))
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    context = command.make_context("train", list(arguments))
    from_form = config_from_cli(context.params)
    assert from_form == TrainConfig(dataset=get_settings().dataset)
    assert parsed["--epochs"] == "3" and parsed["--detect-side"] == "auto"
    assert "--max-minutes" not in parsed  # an empty form field leaves the option out
