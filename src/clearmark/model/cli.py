"""``clearmark train``, ``clearmark evaluate`` and ``clearmark promote``.

Heavy imports happen inside the commands.  Each command prints a JSON object as its
last stdout line: the Airflow task reads it as its XCom (local process or DockerOperator).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer


def _print_result(result: dict[str, Any]) -> None:
    typer.echo(json.dumps(result, default=str))


def _fail(exc: Exception) -> typer.Exit:
    """Print an actionable error (no traceback) and exit non-zero so Airflow retries or fails."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


def _limit_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _train_parameters() -> list[inspect.Parameter]:
    """``clearmark train``'s options, one per :class:`~clearmark.model.train_config.TrainConfig` field."""
    from clearmark.model.train_config import train_options

    parameters = []
    for train_option in train_options():
        spec, schema = train_option.spec, train_option.spec.schema
        value_type: Any = train_option.value_type
        extra: dict[str, Any] = {}
        if "enum" in schema:
            choices: Any = Literal[tuple(choice for choice in schema["enum"] if choice is not None)]  # listed in the help
            value_type = choices if train_option.default is not None else choices | None
        elif spec.text is not None:
            value_type = str if train_option.default is not None else str | None
        elif value_type in (int, float, int | None, float | None):
            extra.update(min=schema.get("minimum"), max=schema.get("maximum"))
        show_default = spec.none_means if train_option.default is None else True
        annotation = Annotated[value_type, typer.Option(train_option.flag, help=spec.help, show_default=show_default, **extra)]
        parameters.append(inspect.Parameter(train_option.name, inspect.Parameter.KEYWORD_ONLY, default=train_option.default, annotation=annotation))
    return parameters


def train_command(**values: Any) -> None:
    """Train the watermark detector and log it to MLflow; last line: {"run_id", "model_uri", "best_val_iou"}."""
    from clearmark.model.data import DatasetError
    from clearmark.model.detector import DetectorError
    from clearmark.model.registry import MlflowUnavailableError
    from clearmark.model.train import TrainingError, train
    from clearmark.model.train_config import config_from_cli
    from clearmark.settings import get_settings

    try:
        result = train(get_settings(), config_from_cli(values))
    except (DatasetError, DetectorError, MlflowUnavailableError, TrainingError) as exc:
        raise _fail(exc) from exc
    if result:  # rank 0 only
        _print_result({k: result[k] for k in ("run_id", "model_uri", "best_val_iou")})


# Typer reads the options from the signature: TrainConfig's fields declare them.
train_command.__signature__ = inspect.Signature(_train_parameters())  # type: ignore[attr-defined]


def evaluate_command(
    model: Annotated[str, typer.Option(help="Detector folder, models:/<name>@<alias>, models:/<name>/<version> or runs:/<id>/export.")] = "",
    dataset: Annotated[str | None, typer.Option(help="Curated dataset name (default: settings.dataset).")] = None,
    dataset_version: Annotated[str | None, typer.Option(help="Published version (default: the latest).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Local folder instead of object storage.")] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    run_id: Annotated[str | None, typer.Option(help="MLflow run that receives the JSON report (default: the run of a runs:/ URI).")] = None,
    output: Annotated[Path | None, typer.Option(help="Also write the JSON report to this file.")] = None,
    record: Annotated[bool, typer.Option(help="Write the split's metrics into the detector folder's metrics.json and model card.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Evaluate a detector on one split: IoU, Dice, precision, recall, accuracy, per-image IoU, quality label."""
    from clearmark.data.dataset import DatasetError
    from clearmark.model.detector import DetectorError
    from clearmark.model.evaluate import evaluate_model
    from clearmark.model.registry import MlflowUnavailableError, champion_uri
    from clearmark.settings import get_settings

    _limit_threads(threads)
    settings = get_settings()
    try:
        report = evaluate_model(
            settings,
            model or champion_uri(settings),
            dataset=dataset,
            dataset_version=dataset_version,
            data_dir=str(data_dir) if data_dir else None,
            split=split,
            log_to_run=run_id,
        )
    except (DatasetError, DetectorError, MlflowUnavailableError) as exc:
        raise _fail(exc) from exc
    if output:
        output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if record:
        from clearmark.model.detector import update_detector_metrics

        if not model or not Path(model).is_dir():
            raise _fail(ValueError("--record needs --model to be a local detector folder."))
        names = ("iou", "dice", "precision", "recall", "accuracy", "images", "quality", "dataset_version")
        update_detector_metrics(model, {f"{split}_{name}": report[name] for name in names})
    _print_result(report)


def calibrate_command(
    model: Annotated[Path, typer.Option(help="Local detector folder (written by `clearmark train`); rewritten in place.")],
    dataset: Annotated[str | None, typer.Option(help="Curated dataset name (default: settings.dataset).")] = None,
    dataset_version: Annotated[str | None, typer.Option(help="Published version (default: the latest).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Local folder instead of object storage.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Recalibrate BatchNorm statistics (training split) and the mask threshold (validation split) of a detector.

    Each change is kept only if validation IoU does not drop; the test split, which the
    gate measures, is never read.  `clearmark train` runs this on its best checkpoint.
    """
    from clearmark.model.calibrate import calibrate_detector
    from clearmark.data.catalog import load_training_data
    from clearmark.data.dataset import DatasetError
    from clearmark.model.detector import DetectorError
    from clearmark.settings import get_settings

    _limit_threads(threads)
    try:
        data = load_training_data(get_settings(), dataset, dataset_version, data_dir)
        result = calibrate_detector(model, data)
    except (DatasetError, DetectorError, ValueError) as exc:
        raise _fail(exc) from exc
    _print_result(result)


def promote_command(
    run_id: Annotated[str, typer.Option(help="MLflow run of the candidate (printed by `clearmark train`).")],
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Gate a trained candidate and move `champion` to it only if it passes; otherwise mark it `challenger`.

    A failed gate is a normal outcome (exit code 0); the last line says why.
    """
    from clearmark.data.dataset import DatasetError
    from clearmark.model.detector import DetectorError
    from clearmark.model.gate import GateConfigError
    from clearmark.model.promotion import PromotionError, gate_candidate, promote, reject
    from clearmark.model.registry import MlflowUnavailableError
    from clearmark.removal.quality import score_removal
    from clearmark.settings import get_settings

    _limit_threads(threads)
    settings = get_settings()
    try:
        decision = gate_candidate(settings, run_id, removal_scorer=score_removal)
        outcome = promote(settings, decision) if decision["passed"] else reject(settings, decision)
    except (DatasetError, DetectorError, GateConfigError, MlflowUnavailableError, PromotionError) as exc:
        raise _fail(exc) from exc
    _print_result({**outcome, "passed": decision["passed"], "candidate": decision["candidate"], "champion_metrics": decision["champion"]})


def baseline_command() -> None:
    """Register the bundled baseline detector as `champion` if the registry has none (idempotent)."""
    from clearmark.model.promotion import PromotionError, ensure_baseline_champion
    from clearmark.model.registry import MlflowUnavailableError
    from clearmark.settings import get_settings

    try:
        version = ensure_baseline_champion(get_settings())
    except (MlflowUnavailableError, PromotionError) as exc:
        raise _fail(exc) from exc
    _print_result({"registered": version is not None, "champion_version": version})


def register(app: typer.Typer) -> None:
    """Add ``train``, ``evaluate``, ``promote`` and ``register-baseline`` to the root ``clearmark`` app."""
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    app.command("calibrate")(calibrate_command)
    app.command("promote")(promote_command)
    app.command("register-baseline")(baseline_command)
