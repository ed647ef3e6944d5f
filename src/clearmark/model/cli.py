"""``clearmark train``, ``clearmark evaluate`` and ``clearmark promote``.

Heavy imports happen inside the commands.  Each command prints a JSON object as its
last stdout line: the Airflow task reads it as its XCom (local process or DockerOperator).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

ARCHITECTURE_HELP = "smp architecture: Unet, UnetPlusPlus, FPN, DeepLabV3Plus, Segformer, Linknet."
ENCODER_HELP = "smp encoder: mit_b0, mit_b1, mit_b2, mit_b5, mobilenet_v2, resnet18, resnet34, efficientnet-b0."


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


def parse_detect_side(value: str) -> int | None:
    """``--detect-side``: ``auto`` -> None (taken from the training data), else a whole number of pixels (0: native)."""
    if value.strip().lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--detect-side must be auto, 0 (native resolution) or a number of pixels, got {value!r}.") from None


def train_command(
    dataset: Annotated[str | None, typer.Option(help="Curated dataset name (default: settings.dataset).")] = None,
    dataset_version: Annotated[str | None, typer.Option(help="Published version (default: the latest).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Local folder (curated layout or `clearmark synth` output) instead of object storage.")] = None,
    architecture: Annotated[str, typer.Option(help=ARCHITECTURE_HELP)] = "Unet",
    encoder: Annotated[str, typer.Option(help=ENCODER_HELP)] = "mit_b0",
    decoder_channels: Annotated[str | None, typer.Option(help="Five comma-separated U-Net decoder widths, e.g. 128,64,32,16,16.")] = None,
    image_size: Annotated[int, typer.Option(help="Training crop side in pixels (multiple of 32).")] = 256,
    detect_side: Annotated[
        str,
        typer.Option(help="Long side removal downscales photos to before detecting: auto (the training images' median long side), 0 (native) or pixels."),
    ] = "auto",
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    scheduler: Annotated[str, typer.Option(help="onecycle or cosine.")] = "onecycle",
    seed: Annotated[int, typer.Option()] = 42,
    patience: Annotated[int, typer.Option(min=1, help="Epochs without a better val IoU before stopping.")] = 5,
    max_minutes: Annotated[float | None, typer.Option(min=0.01, help="Stop after the epoch that passes this much training time.")] = None,
    resume: Annotated[Path | None, typer.Option(help="last.pt checkpoint of an interrupted run.")] = None,
    num_workers: Annotated[int | None, typer.Option(help="DataLoader workers (default: 0 on CPU, 4 on GPU).")] = None,
    encoder_weights: Annotated[Path | None, typer.Option(help="Local pretrained encoder weights (.safetensors/.pth).")] = None,
    init_from: Annotated[
        str | None, typer.Option(help="Fine-tune this detector (folder or models:/ URI, e.g. models:/clearmark-detector@champion); same network options.")
    ] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Where checkpoints go (default: $CLEARMARK_HOME/checkpoints/<run id>).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
) -> None:
    """Train the watermark detector and log it to MLflow; last line: {"run_id", "model_uri", "best_val_iou"}."""
    from clearmark.data.dataset import DatasetError
    from clearmark.model.detector import DetectorError
    from clearmark.model.registry import MlflowUnavailableError
    from clearmark.model.train import TrainConfig, TrainingError, train
    from clearmark.settings import get_settings

    _limit_threads(threads)
    if scheduler not in ("onecycle", "cosine"):
        raise _fail(ValueError(f"--scheduler must be onecycle or cosine, got {scheduler!r}."))
    try:
        side = parse_detect_side(detect_side)
    except ValueError as exc:
        raise _fail(exc) from exc
    chosen_scheduler: Literal["onecycle", "cosine"] = "onecycle" if scheduler == "onecycle" else "cosine"
    config = TrainConfig(
        dataset=dataset,
        dataset_version=dataset_version,
        data_dir=data_dir,
        architecture=architecture,
        encoder=encoder,
        decoder_channels=[int(c) for c in decoder_channels.split(",")] if decoder_channels else None,
        image_size=image_size,
        detect_side=side,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        scheduler=chosen_scheduler,
        seed=seed,
        patience=patience,
        max_minutes=max_minutes,
        resume=resume,
        num_workers=num_workers,
        encoder_weights=encoder_weights,
        init_from=init_from,
        checkpoint_dir=checkpoint_dir,
        run_name=run_name,
    )
    try:
        result = train(get_settings(), config)
    except (DatasetError, DetectorError, MlflowUnavailableError, TrainingError) as exc:
        raise _fail(exc) from exc
    if result:  # rank 0 only
        _print_result({k: result[k] for k in ("run_id", "model_uri", "best_val_iou")})


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
    from clearmark.model.registry import MlflowUnavailableError
    from clearmark.settings import get_settings

    _limit_threads(threads)
    settings = get_settings()
    try:
        report = evaluate_model(
            settings,
            model or f"models:/{settings.registered_model}@champion",
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
    from clearmark.settings import get_settings

    _limit_threads(threads)
    settings = get_settings()
    try:
        decision = gate_candidate(settings, run_id)
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
