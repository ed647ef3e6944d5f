"""Quality gate and promotion against the REAL MLflow server of tests/conftest.py.

Models of known quality without training: the test split's masks cover 90 % of every
image, so a network whose output is constant "watermark" scores IoU 0.90, one that
says "no watermark" scores 0, and the same random network with its output bias set
to call ~95 % of pixels watermark lands in between (above the thresholds, below 0.90).
Removal quality: where the pairs have clean originals, a matte network that predicts the
true blend (alpha 0.5, white) everywhere restores far better than the mask network of the
same IoU, whose footprint can only be inpainted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clearmark.model.backends import MLFLOW_TAG, choose_backend
from clearmark.model.detector import Detector, DetectorConfig, build_network, save_detector
from clearmark.model import promotion
from clearmark.model.promotion import ensure_baseline_champion, promote, reject
from clearmark.model.registry import MODEL_URI_TAG, log_detector_model, mlflow_client, use_tracking_server
from clearmark.removal.quality import score_removal
from clearmark.settings import Settings

pytestmark = pytest.mark.integration
CONFIG = DetectorConfig(architecture="Unet", encoder="mobilenet_v2", image_size=64, decoder_channels=[16, 16, 16, 16, 8])
MATTE = dataclasses.replace(CONFIG, outputs="matte")


def gate_candidate(settings: Settings, run_id: str) -> dict:
    """The gate as `clearmark promote` and the training DAG run it: removal scored by the shipped restorer."""
    return promotion.gate_candidate(settings, run_id, removal_scorer=score_removal)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 pairs in the `clearmark synth` layout; every mask covers all but a 10 % strip."""
    folder = tmp_path_factory.mktemp("gate-data")
    rng = np.random.default_rng(0)
    mask = np.full((40, 50), 255, np.uint8)
    mask[:4] = 0  # 4 of 40 rows: coverage 0.90
    for part in ("watermarked", "masks"):
        (folder / part).mkdir()
    for index in range(30):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "watermarked" / f"synth_{index:05d}.png")
        Image.fromarray(mask).save(folder / "masks" / f"synth_{index:05d}.png")
    return folder


def _network(kind: str, data_dir: Path) -> torch.nn.Module:
    torch.manual_seed(7)
    network = build_network(CONFIG).eval()
    head = network.segmentation_head[0]
    if kind in {"all", "none"}:
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.constant_(head.bias, 10.0 if kind == "all" else -10.0)
        return network
    # "most": shift the output so that ~95 % of the test pixels are called watermark.
    images = np.stack([np.asarray(Image.open(p)) for p in sorted((data_dir / "watermarked").iterdir())[:8]])
    probabilities = Detector(network, CONFIG, "probe", device="cpu").predict_proba(images).astype(np.float64)
    logits = np.log(np.clip(probabilities, 1e-7, 1 - 1e-7) / np.clip(1 - probabilities, 1e-7, 1))
    with torch.no_grad():
        head.bias -= float(np.quantile(logits, 0.05))
    return network


@pytest.fixture(scope="module")
def restoration_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 pairs with clean originals: a white mark at opacity 0.5 over all but a 4-row strip, as masked."""
    folder = tmp_path_factory.mktemp("gate-restoration")
    rng = np.random.default_rng(1)
    mask = np.full((40, 50), 255, np.uint8)
    mask[:4] = 0
    for part in ("clean", "watermarked", "masks"):
        (folder / part).mkdir()
    for index in range(30):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
        clean = np.asarray(coarse.resize((50, 40), Image.Resampling.BICUBIC))  # photo-like: smooth, not noise
        watermarked = np.where(mask[..., None] > 0, np.rint(0.5 * 255 + 0.5 * clean.astype(np.float64)), clean).astype(np.uint8)
        name = f"synth_{index:05d}.png"
        Image.fromarray(clean).save(folder / "clean" / name)
        Image.fromarray(watermarked).save(folder / "watermarked" / name)
        Image.fromarray(mask).save(folder / "masks" / name)
    return folder


def _true_blend_network() -> torch.nn.Module:
    """A matte network whose maps are constant: footprint everywhere, alpha 0.5, W white."""
    torch.manual_seed(7)
    network = build_network(MATTE).eval()
    head = network.segmentation_head[0]
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([10.0, 0.0, 10.0, 10.0, 10.0]))  # sigmoid: 1, 0.5, 1, 1, 1
    return network


def _candidate_run(settings: Settings, data_dir: Path, kind: str, tmp_path: Path) -> str:
    """An MLflow run shaped like a training run's: data tags plus the logged pyfunc."""
    import mlflow

    network, config = (_true_blend_network(), MATTE) if kind == "true-blend" else (_network(kind, data_dir), CONFIG)
    folder = save_detector(network, config, tmp_path / f"det-{kind}", data_version="local-test")
    use_tracking_server(settings)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(run_name=kind) as run:
        mlflow.set_tags({"dataset": "synthetic", "dataset_version": "local-test", "data_location": str(data_dir)})
        mlflow.set_tag(MODEL_URI_TAG, log_detector_model(folder))
    return run.info.run_id


def _aliases(settings: Settings) -> dict[str, str]:
    return {alias: str(v) for alias, v in mlflow_client(settings).get_registered_model(settings.registered_model).aliases.items()}


def test_first_then_better_model_are_promoted(settings: Settings, data_dir: Path, tmp_path: Path) -> None:
    weak = gate_candidate(settings, _candidate_run(settings, data_dir, "none", tmp_path))
    assert not weak["passed"] and weak["champion"] is None
    assert any(reason.startswith("recall 0.0000 is below") for reason in weak["reasons"])
    reject(settings, weak)
    assert _aliases(settings) == {"challenger": weak["candidate"]["version"]}
    # Make that weak model the champion (as if promoted long ago under an older gate).
    mlflow_client(settings).delete_registered_model_alias(settings.registered_model, "challenger")
    mlflow_client(settings).set_registered_model_alias(settings.registered_model, "champion", weak["candidate"]["version"])

    good_run = _candidate_run(settings, data_dir, "all", tmp_path)
    decision = gate_candidate(settings, good_run)
    assert decision["passed"], decision["reasons"]
    assert decision["candidate"]["removal"] == decision["champion"]["removal"] == {
        "skipped": f"split 'test' of synthetic {decision['dataset_version']} has no clean images to score removal against"
    }
    assert decision["removal_check"].startswith("removal quality not compared: split 'test'")
    assert decision["candidate"]["iou"] == pytest.approx(0.9) and decision["candidate"]["quality"] == "EXCELLENT"
    assert decision["champion"]["version"] == weak["candidate"]["version"] and decision["champion"]["iou"] == 0.0
    outcome = promote(settings, decision)
    assert outcome["champion"] == decision["candidate"]["version"] and outcome["previous"] == weak["candidate"]["version"]
    assert _aliases(settings) == {"champion": decision["candidate"]["version"], "previous": weak["candidate"]["version"]}
    logged = mlflow_client(settings).download_artifacts(good_run, "gate/decision.json")
    assert '"passed": true' in Path(logged).read_text()
    assert mlflow_client(settings).get_run(good_run).data.metrics["test_iou"] == pytest.approx(0.9)
    # The gate scored the candidate on the backend removal runs, and says which.
    assert decision["candidate"]["backend"] == mlflow_client(settings).get_run(good_run).data.tags[MLFLOW_TAG] == choose_backend("auto").name


def test_first_model_passing_thresholds_is_promoted(settings: Settings, data_dir: Path, tmp_path: Path) -> None:
    decision = gate_candidate(settings, _candidate_run(settings, data_dir, "all", tmp_path))
    assert decision["passed"] and decision["champion"] is None
    assert "no champion yet" in decision["reasons"][0]
    assert promote(settings, decision)["previous"] is None
    assert _aliases(settings) == {"champion": decision["candidate"]["version"]}


def test_worse_model_above_thresholds_is_not_promoted(settings: Settings, data_dir: Path, tmp_path: Path) -> None:
    champion = gate_candidate(settings, _candidate_run(settings, data_dir, "all", tmp_path))
    promote(settings, champion)
    decision = gate_candidate(settings, _candidate_run(settings, data_dir, "most", tmp_path))
    candidate = decision["candidate"]
    assert all(candidate[m] >= t for m, t in decision["thresholds"].items()), candidate  # good enough alone...
    assert candidate["iou"] < decision["champion"]["iou"]  # ...but worse than the champion
    assert not decision["passed"]
    assert decision["reasons"] == [f"iou {candidate['iou']:.4f} is worse than the champion's 0.9000 (version {champion['candidate']['version']}) on the same split"]
    outcome = reject(settings, decision)
    assert outcome["champion"] == champion["candidate"]["version"]
    assert _aliases(settings) == {"champion": champion["candidate"]["version"], "challenger": candidate["version"]}
    version = mlflow_client(settings).get_model_version(settings.registered_model, candidate["version"])
    assert version.tags["gate"] == "rejected" and "worse than the champion" in version.description
    with pytest.raises(RuntimeError, match="Refusing to promote"):
        promote(settings, decision)


def test_bundled_baseline_becomes_the_first_champion_once(
    settings: Settings, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    baseline = save_detector(_network("all", tmp_path), CONFIG, tmp_path / "baseline", metrics={"test_iou": 0.9}, data_version="local-test")
    configured = settings.model_copy(update={"baseline_dir": baseline})
    monkeypatch.setattr(logging.getLogger("clearmark"), "handlers", [])  # a CLI test may have added a stderr handler
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="clearmark.model.promotion"):
        version = ensure_baseline_champion(configured)
    # MLflow's registration notices are logged at info level, not printed on stderr (Airflow: errors).
    assert "Created version" not in capfd.readouterr().err
    assert any("Created version" in record.getMessage() for record in caplog.records)
    assert version is not None and _aliases(configured) == {"champion": version}
    assert ensure_baseline_champion(configured) is None  # idempotent
    assert len(mlflow_client(settings).search_model_versions(f"name='{settings.registered_model}'")) == 1
    from clearmark.model.loading import load_detector

    assert load_detector(f"models:/{settings.registered_model}@champion", settings).config == CONFIG


def test_the_gate_keeps_the_champion_that_restores_better(settings: Settings, restoration_dir: Path, tmp_path: Path) -> None:
    """Same mask metrics (IoU 0.90 both); only removal quality tells them apart, both ways round."""
    champion = gate_candidate(settings, _candidate_run(settings, restoration_dir, "true-blend", tmp_path))
    assert champion["passed"], champion["reasons"]
    promote(settings, champion)
    ours = champion["candidate"]["removal"]
    assert ours["restorer"] == "restore" and ours["images"] == champion["candidate"]["images"]
    assert ours["psnr_mark"] > 40  # the photo under the mark, unblended

    decision = gate_candidate(settings, _candidate_run(settings, restoration_dir, "all", tmp_path))
    candidate = decision["candidate"]
    assert candidate["iou"] == pytest.approx(champion["candidate"]["iou"]) == pytest.approx(0.9)
    assert not decision["passed"]
    theirs = candidate["removal"]
    assert theirs["psnr_mark"] < ours["psnr_mark"] - 10 and theirs["psnr_whole"] < ours["psnr_whole"]
    assert decision["reasons"] == [
        f"{metric} {theirs[metric]:.2f} dB is worse than the champion's {ours[metric]:.2f} dB "
        f"(version {champion['candidate']['version']}, restorer restore) on the same split"
        for metric in ("psnr_whole", "psnr_mark")
    ]
    assert decision["removal_check"] == "removal quality compared: psnr_whole, psnr_mark (tolerance 0.0 dB)"
    logged = json.loads(Path(mlflow_client(settings).download_artifacts(decision["run_id"], "gate/decision.json")).read_text())
    assert logged["candidate"]["removal"] == theirs and logged["champion"]["removal"] == ours
    reject(settings, decision)

    unchecked = tmp_path / "gate.yaml"
    unchecked.write_text(settings.gate_file.read_text().replace("removal_compare: [psnr_whole, psnr_mark]", "removal_compare: []"))
    assert gate_candidate(settings.model_copy(update={"gate_file": unchecked}), decision["run_id"])["passed"]  # equal IoU passes
