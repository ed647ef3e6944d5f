"""Training options are declared once (TrainConfig) and offered alike by `clearmark train` and the train DAG's form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from clearmark.cli import app
from clearmark.model.train_config import FROM_SCRATCH, TrainConfig, TrainingError, cli_arguments, config_from_cli, scheduled_recipe, train_options
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


def test_every_cli_option_has_a_form_field_with_the_recipes_or_the_same_default_or_says_why_not(form: dict) -> None:
    options = cli_options()
    local_only = {o.name for o in train_options() if not o.in_form}
    assert set(options) == set(form) | local_only  # and vice versa: no form field the CLI lacks
    assert local_only == {"data_dir", "resume", "encoder_weights", "checkpoint_dir", "run_name"}
    recipe = scheduled_recipe(get_settings().training_file)
    for name, param in form.items():
        assert recipe.get(name, resolved(options[name].default, name, get_settings())) == param.value, name
        assert param.description, name


def test_every_cli_option_is_described_with_its_default() -> None:
    for name, cli_option in cli_options().items():
        assert cli_option.help, name
        assert cli_option.show_default not in (None, False), name


def test_form_defaults_give_the_recipe_back_through_the_cli(form: dict) -> None:
    """The runner arguments built from the untouched form configure the shipped recipe: `clearmark train` with the recipe's options."""
    arguments = cli_arguments({name: param.value for name, param in form.items()})
    parsed = dict(zip(arguments[::2], arguments[1::2], strict=True))
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    from_form = config_from_cli(command.make_context("train", list(arguments)).params)
    recipe = scheduled_recipe(get_settings().training_file)
    recipe_arguments = cli_arguments({"dataset": get_settings().dataset, **recipe})
    assert from_form == config_from_cli(command.make_context("train", recipe_arguments).params)
    assert from_form.init_from == "champion" and from_form.epochs == recipe["epochs"]  # the shipped recipe fine-tunes the champion
    assert parsed["--detect-side"] == "auto"
    assert "--max-minutes" not in parsed and "--encoder" not in parsed  # an empty form field leaves the option out


def test_a_recipe_with_an_unknown_or_a_local_only_option_is_refused_with_the_options_it_takes(tmp_path: Path) -> None:
    recipe = tmp_path / "training.yaml"
    recipe.write_text("epochs: 2\nepoch: 3\ncheckpoint_dir: /tmp/x\n")
    with pytest.raises(TrainingError, match=r"checkpoint_dir, epoch is not an option of a scheduled run; use .*epochs"):
        scheduled_recipe(recipe)
    with pytest.raises(TrainingError, match="missing; restore config/training.yaml or set CLEARMARK_TRAINING_FILE"):
        scheduled_recipe(tmp_path / "absent.yaml")


def test_a_recipe_value_the_form_would_refuse_fails_when_the_dag_is_built(tmp_path: Path) -> None:
    from clearmark.orchestration import train_params

    recipe = tmp_path / "training.yaml"
    recipe.write_text("image_size: 100\n")  # not a multiple of 32
    with pytest.raises(TrainingError, match=r"training.yaml: image_size: 100 is not valid"):
        train_params(get_settings().model_copy(update={"training_file": recipe}))


def test_open_network_options_follow_the_start_detector_else_the_from_scratch_network() -> None:
    from clearmark.model.detector import DetectorConfig

    start = DetectorConfig("FPN", "resnet18", 256, decoder_channels=None, outputs="matte")
    config = TrainConfig(encoder="mobilenet_v2")  # one option given, three open
    fine_tune = config.with_network_of(start)
    assert (fine_tune.architecture, fine_tune.encoder, fine_tune.decoder_channels, fine_tune.outputs) == ("FPN", "mobilenet_v2", None, "matte")
    scratch = config.with_network_of(None)
    assert (scratch.architecture, scratch.encoder, scratch.outputs) == (FROM_SCRATCH["architecture"], "mobilenet_v2", FROM_SCRATCH["outputs"])
    assert config.detector_config().architecture == FROM_SCRATCH["architecture"]
