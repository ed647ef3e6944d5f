"""Training against the REAL MLflow server of tests/conftest.py, on tiny synthetic sets (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from clearmark.data.synth import generate_synthetic
from clearmark.data.dataset import DatasetError
from clearmark.model.promotion import register_run_model
from clearmark.model.registry import mlflow_client
from clearmark.model.train import TrainConfig, TrainingError, train
from clearmark.settings import Settings

pytestmark = pytest.mark.integration
TINY = {"architecture": "Unet", "encoder": "mobilenet_v2", "decoder_channels": [16, 16, 16, 16, 8], "image_size": 64, "batch_size": 4}
TINY_CLI = ["--encoder", "mobilenet_v2", "--decoder-channels", "16,16,16,16,8", "--image-size", "64", "--batch-size", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("train-synth")
    generate_synthetic(folder, 40, 11, size=64, progress=False)
    return folder


def _cli(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CLEARMARK_HOME": str(settings.home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "clearmark.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_trains_a_matte_network_on_photo_pairs_and_saves_a_folder_that_loads(settings: Settings, tmp_path: Path) -> None:
    """A tiny `clearmark train --outputs matte` on generated photo-style pairs: every loss term and the
    validation alpha error reach MLflow, and the best folder loads as a matte detector."""
    import numpy as np

    from clearmark.model.detector import load_detector_folder

    folder = tmp_path / "photos"
    generate_synthetic(folder, 32, 23, size=64, styles="photo-train", jpeg_quality=(80, 95), progress=False)
    checkpoints = tmp_path / "checkpoints"
    process = _cli(
        settings, "train", "--data-dir", str(folder), "--outputs", "matte", "--epochs", "1", "--checkpoint-dir", str(checkpoints),
        "--alpha-loss-weight", "2", "--run-name", "matte-test", *TINY_CLI,
    )  # fmt: skip
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])

    run = mlflow_client(settings).get_run(result["run_id"])
    assert run.data.params["outputs"] == "matte" and run.data.params["alpha_loss_weight"] == "2.0"
    for metric in ("train_loss_footprint", "train_loss_alpha", "train_loss_colour", "train_loss_reconstruction", "val_iou", "val_alpha_mae", "val_score"):
        assert metric in run.data.metrics, metric
    assert 0.0 <= run.data.metrics["val_alpha_mae"] <= 1.0
    detector = load_detector_folder(checkpoints / "best", device="cpu")
    assert detector.config.outputs == "matte"
    probability, alpha, colour = detector.predict_matte(np.zeros((1, 50, 70, 3), np.uint8))
    assert probability.shape == alpha.shape == (1, 50, 70) and colour.shape == (1, 50, 70, 3)


def test_logged_validation_is_what_the_saved_weights_score_offline_on_the_runs_validation_rows(settings: Settings, tmp_path: Path) -> None:
    """A matte run seeded from a mask detector (the head reshaped) logs val_iou / val_alpha_mae equal to
    evaluate_pairs of the epoch's saved weights in a freshly built detector, on the folder loaded as
    training loads it (load_training_data: the dataset's synthetic source names the pair ids, hence the
    splits).  Issue 13's offline figures were higher because they read the folder under another source name."""
    import torch

    from clearmark.data.catalog import load_training_data
    from clearmark.model.detector import DetectorConfig, build_network, load_detector_folder, save_detector
    from clearmark.model.evaluate import evaluate_pairs

    folder, checkpoints = tmp_path / "photos", tmp_path / "checkpoints"
    generate_synthetic(folder, 32, 29, size=64, styles="photo-train", progress=False)
    mask_config = DetectorConfig(TINY["architecture"], TINY["encoder"], TINY["image_size"], decoder_channels=TINY["decoder_channels"])
    save_detector(build_network(mask_config), mask_config, tmp_path / "mask-start")
    config = TrainConfig(data_dir=folder, outputs="matte", epochs=1, init_from=str(tmp_path / "mask-start"), checkpoint_dir=checkpoints, threads=1, **TINY)

    result = train(settings, config)

    run = mlflow_client(settings).get_run(result["run_id"])
    logged = run.data.metrics
    data = load_training_data(settings, config.dataset, data_dir=folder)
    rows = data.split("val").head(config.max_val_images)
    assert data.version == json.loads((checkpoints / "best" / "config.json").read_text())["data_version"]
    # After the run, calibration may give the best folder a new threshold and BatchNorm statistics;
    # the logged figures are those of the epoch's weights (last.pt) at the threshold trained with.
    detector = load_detector_folder(checkpoints / "best", device="cpu")
    detector.network.load_state_dict(torch.load(checkpoints / "last.pt", weights_only=False)["model"])
    detector.config = replace(detector.config, threshold=config.threshold)
    offline = evaluate_pairs(detector, data.matte_pairs(rows), progress=False)
    assert offline["images"] == len(rows) == int(run.data.params["val_images"])
    assert 0.0 < offline["iou"] < 1.0 and "alpha_mae" in offline
    assert offline["iou"] == pytest.approx(logged["val_iou"], rel=1e-6, abs=1e-9)
    assert offline["alpha_mae"] == pytest.approx(logged["val_alpha_mae"], rel=1e-6, abs=1e-9)


def test_fine_tuning_the_champion_pins_its_version_and_keeps_its_network_and_working_size(settings: Settings, synth_folder: Path, tmp_path: Path) -> None:
    """`--init-from champion` without network options (the scheduled recipe): the run records the
    champion's version, not the alias, and builds the champion's network at its detect_side."""
    from clearmark.model.detector import load_detector_folder
    from clearmark.model.promotion import ensure_baseline_champion

    version = ensure_baseline_champion(settings)
    baseline = load_detector_folder(settings.baseline_dir, device="cpu").config
    config = TrainConfig(data_dir=synth_folder, epochs=1, init_from="champion", image_size=64, batch_size=4, threads=1, max_val_images=4, checkpoint_dir=tmp_path)

    result = train(settings, config)

    run = mlflow_client(settings).get_run(result["run_id"])
    assert run.data.params["init_from"] == f"models:/{settings.registered_model}/{version}"
    tuned = load_detector_folder(tmp_path / "best", device="cpu").config
    network = ("architecture", "encoder", "decoder_channels", "outputs", "detect_side")
    assert [getattr(tuned, name) for name in network] == [getattr(baseline, name) for name in network]
    assert baseline.detect_side != 64  # not the 64 px training images' side, which a run from scratch takes


@pytest.mark.slow
def test_cli_trains_logs_to_mlflow_and_pyfunc_loads_at_any_size(settings: Settings, synth_folder: Path) -> None:
    process = _cli(settings, "train", "--data-dir", str(synth_folder), "--epochs", "2", "--run-name", "cli-test", *TINY_CLI)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])  # the DAG reads the last line
    assert set(result) == {"run_id", "model_uri", "best_val_iou"}
    assert 0.0 <= result["best_val_iou"] <= 1.0

    client = mlflow_client(settings)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["encoder"] == "mobilenet_v2" and run.data.params["epochs"] == "2"
    assert run.data.tags["dataset"] == "synthetic" and run.data.tags["dataset_version"].startswith("local-")
    assert len(run.data.tags["manifest_sha256"]) == 64 and run.data.tags["system.torch"]
    for metric in ("train_loss", "val_iou", "val_dice", "val_precision", "val_recall", "learning_rate"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1, 2], metric
    # The threshold is calibrated on the validation split and travels with the export.
    calibrated = client.get_metric_history(run.info.run_id, "calibrated_threshold")
    assert len(calibrated) == 1 and 0.2 <= calibrated[0].value <= 0.8
    exported = json.loads(Path(client.download_artifacts(run.info.run_id, "export/config.json")).read_text())
    assert exported["threshold"] == pytest.approx(calibrated[0].value)
    assert exported["detect_side"] == 64  # the training images' long side: removal downscales photos to it
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {a.path for a in client.list_artifacts(run.info.run_id, "export")}
    assert {"config", "export/model.safetensors", "export/config.json", "export/MODEL_CARD.md", "export/metrics.json"} <= artifacts
    images = {a.path for a in client.list_artifacts(run.info.run_id, "images")} | {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert any("predictions" in path for path in images), images

    # Registered with the champion alias, the pyfunc predicts at a size it never trained on, in another process.
    version = register_run_model(settings, result["run_id"])
    assert register_run_model(settings, result["run_id"]) == version  # a retried task reuses it
    client.set_registered_model_alias(settings.registered_model, "champion", version)
    probe = (
        "import mlflow, numpy as np; "
        f"m = mlflow.pyfunc.load_model('models:/{settings.registered_model}@champion'); "
        "out = m.predict(np.random.default_rng(0).integers(0, 256, (2, 77, 131, 3), dtype=np.uint8)); "
        "print(out.shape, out.dtype, float(out.min()) >= 0.0, float(out.max()) <= 1.0)"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == "(2, 77, 131) float32 True True"

    # The removal pipeline's loader caches by version: the second load skips the download.
    from clearmark.model.loading import load_detector

    load_detector(f"models:/{settings.registered_model}@champion", settings)
    started = time.monotonic()
    detector = load_detector(f"models:/{settings.registered_model}@champion", settings)
    assert time.monotonic() - started <= 2.0
    assert detector.version == version
    assert (settings.cache_dir / "models" / settings.registered_model / version / "model.safetensors").is_file()


@pytest.mark.slow
def test_interrupted_training_resumes_in_the_same_run(settings: Settings, synth_folder: Path, tmp_path: Path) -> None:
    checkpoints = tmp_path / "ckpt"
    process = _cli(settings, "train", "--data-dir", str(synth_folder), "--epochs", "4", "--checkpoint-dir", str(checkpoints), *TINY_CLI)
    deadline = time.monotonic() + 600
    while not (checkpoints / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.kill()  # interrupted after (at least) one epoch
    process.communicate()
    import torch

    saved = torch.load(checkpoints / "last.pt", weights_only=False)
    assert (checkpoints / "best" / "model.safetensors").is_file()

    result = train(settings, TrainConfig(data_dir=synth_folder, epochs=4, resume=checkpoints / "last.pt", **TINY))
    assert result["run_id"] == saved["run_id"]
    history = mlflow_client(settings).get_metric_history(result["run_id"], "val_iou")
    assert {m.step for m in history} == {1, 2, 3, 4}
    assert torch.load(checkpoints / "last.pt", weights_only=False)["epoch"] == 3


def test_fine_tuning_starts_from_the_given_detectors_weights(settings: Settings, synth_folder: Path, tmp_path: Path) -> None:
    import torch

    from clearmark.model.detector import DetectorConfig, build_network, load_detector_folder, save_detector

    config = TrainConfig(data_dir=synth_folder, epochs=1, **TINY)
    torch.manual_seed(12345)  # weights the run's own seed would not produce
    start = build_network(config.detector_config())
    save_detector(start, config.detector_config(), tmp_path / "start")
    config.learning_rate, config.weight_decay = 1e-12, 0.0  # one epoch that barely moves the weights

    result = train(settings, replace(config, init_from=str(tmp_path / "start")))

    tuned = load_detector_folder(result["export_dir"]).network.state_dict()
    fresh = build_network(config.detector_config()).state_dict()
    convs = [k for k, v in start.state_dict().items() if k.endswith("weight") and v.ndim == 4]
    assert all(torch.allclose(tuned[k], start.state_dict()[k], atol=1e-6) for k in convs)
    assert not any(torch.allclose(fresh[k], start.state_dict()[k]) for k in convs)
    assert mlflow_client(settings).get_run(result["run_id"]).data.params["init_from"] == str(tmp_path / "start")

    other = DetectorConfig("Unet", "mobilenet_v2", 64, decoder_channels=[32, 16, 16, 16, 8])
    save_detector(build_network(other), other, tmp_path / "other")
    with pytest.raises(TrainingError, match="same --architecture, --encoder and --decoder-channels"):
        train(settings, replace(config, init_from=str(tmp_path / "other")))


def test_time_budget_stops_after_the_epoch_that_passes_it(settings: Settings, synth_folder: Path) -> None:
    result = train(settings, TrainConfig(data_dir=synth_folder, epochs=50, patience=50, max_minutes=0.001, **TINY))
    client = mlflow_client(settings)
    assert [m.step for m in client.get_metric_history(result["run_id"], "val_iou")] == [1]
    elapsed = client.get_metric_history(result["run_id"], "elapsed_seconds")
    assert len(elapsed) == 1 and elapsed[0].value >= 0.06
    with pytest.raises(TrainingError, match="max_minutes must be positive"):
        train(settings, TrainConfig(data_dir=synth_folder, max_minutes=0, **TINY))


def test_diverging_loss_stops_with_a_clear_error(settings: Settings, synth_folder: Path) -> None:
    with pytest.raises(TrainingError, match="diverged.*Lower --learning-rate"):
        train(settings, TrainConfig(data_dir=synth_folder, epochs=1, learning_rate=1e30, scheduler="cosine", run_name="nan", **TINY))
    runs = mlflow_client(settings).search_runs([mlflow_client(settings).get_experiment_by_name(settings.experiment).experiment_id])
    assert [r.info.status for r in runs if r.info.run_name == "nan"] == ["FAILED"]


def test_missing_dataset_version_is_a_clear_error(settings: Settings, store: object) -> None:
    with pytest.raises(DatasetError, match="not published"):
        train(settings, TrainConfig(dataset="synthetic", dataset_version="v0123456789ab", epochs=1, **TINY))
    with pytest.raises(DatasetError, match="no published version"):
        train(settings, TrainConfig(dataset="synthetic", dataset_version="latest", epochs=1, **TINY))


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run(settings: Settings, synth_folder: Path) -> None:
    """DDP on CPU (gloo): both ranks train, only rank 0 logs and prints the result line."""
    env = {**os.environ, "CLEARMARK_HOME": str(settings.home), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "clearmark.cli", "train"]
    done = subprocess.run([*command, "--data-dir", str(synth_folder), "--epochs", "1", *TINY_CLI], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [line for line in done.stdout.splitlines() if line.startswith('{"run_id"')]
    assert len(results) == 1
    run = mlflow_client(settings).get_run(json.loads(results[0])["run_id"])
    assert run.data.tags["system.world_size"] == "2" and run.info.status == "FINISHED"
