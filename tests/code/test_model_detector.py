"""Detector contract: name registry, any-size inference, export and reload (CPU, tiny networks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clearmark.model.detector import (
    ARCHITECTURES,
    ENCODERS,
    Detector,
    DetectorConfig,
    DetectorError,
    build_network,
    load_detector_folder,
    save_detector,
    update_detector_metrics,
)

TINY = DetectorConfig(architecture="Unet", encoder="mobilenet_v2", image_size=64, decoder_channels=[16, 16, 16, 16, 8])


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(TINY).eval()


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(DetectorError, match="choose one of Unet"):
        build_network(DetectorConfig(architecture="Transformerish"))
    with pytest.raises(DetectorError, match="mit_b0"):
        build_network(DetectorConfig(encoder="vgg_huge"))
    with pytest.raises(DetectorError, match="multiple of 32"):
        DetectorConfig(image_size=100).validate()


def test_the_accepted_names_are_smps_own() -> None:
    """The one list of choices (CLI help, DAG form, config check) names only what smp itself registers."""
    import segmentation_models_pytorch as smp

    smp_architectures = {model.__name__ for model in smp.MODEL_ARCHITECTURES_MAPPING.values()}
    assert set(ARCHITECTURES) <= smp_architectures, set(ARCHITECTURES) - smp_architectures
    assert set(ENCODERS) <= set(smp.encoders.get_encoder_names()), set(ENCODERS) - set(smp.encoders.get_encoder_names())


@pytest.mark.parametrize("shape", [(1, 37, 53, 3), (2, 64, 96, 3), (1, 130, 31, 3)])
def test_predict_proba_takes_any_size(network: torch.nn.Module, shape: tuple[int, ...]) -> None:
    detector = Detector(network, TINY, version="test", device="cpu")
    batch = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    probabilities = detector.predict_proba(batch)
    assert probabilities.shape == shape[:3]
    assert probabilities.dtype == np.float32
    assert float(probabilities.min()) >= 0.0 and float(probabilities.max()) <= 1.0


def test_predict_proba_of_a_training_network_runs_in_eval_mode_and_restores_training() -> None:
    torch.manual_seed(6)
    network = build_network(TINY)
    for module in network.modules():  # statistics far from a batch's own, so the two modes differ
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
    detector = Detector(network, TINY, version="test", device="cpu")
    batch = np.random.default_rng(7).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    network.train()
    during_training = detector.predict_proba(batch)
    assert network.training and all(m.training for m in network.modules())
    network.eval()
    np.testing.assert_allclose(during_training, detector.predict_proba(batch), atol=1e-6)
    assert not any(m.training for m in network.modules())


def test_folding_batchnorm_keeps_the_predictions_and_removes_every_batchnorm() -> None:
    torch.manual_seed(4)
    network = build_network(TINY)
    for module in network.modules():  # trained-looking statistics, so folding has work to do
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    detector = Detector(network, TINY, version="test", device="cpu")
    batch = np.random.default_rng(5).integers(0, 256, (2, 70, 45, 3), dtype=np.uint8)
    before = detector.predict_proba(batch)
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in detector.network.modules())

    assert detector.fold_batchnorm() == batchnorms > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in detector.network.modules())
    np.testing.assert_allclose(detector.predict_proba(batch), before, atol=1e-4)


def test_removal_workers_get_the_folded_detector_once(network: torch.nn.Module, tmp_path: Path) -> None:
    from clearmark.removal.runner import get_detector
    from clearmark.settings import Settings

    folder = save_detector(network, TINY, tmp_path / "det", metrics={}, data_version="local-test")
    settings = Settings(home=tmp_path / "home")
    served = get_detector(settings, str(folder))
    assert get_detector(settings, str(folder)) is served
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.network.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in load_detector_folder(folder).network.modules())  # the saved model is untouched


def test_predict_proba_rejects_other_inputs(network: torch.nn.Module) -> None:
    detector = Detector(network, TINY, version="test", device="cpu")
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.predict_proba(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="N x H x W x 3"):
        detector.predict_proba(np.zeros((32, 32, 3), np.uint8))


def test_save_and_load_give_the_same_predictions(network: torch.nn.Module, tmp_path: Path) -> None:
    folder = save_detector(network, TINY, tmp_path / "det", metrics={"val_iou": 0.5}, data_version="v0123456789ab")
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "config.json", "metrics.json", "model.safetensors"]
    record = json.loads((folder / "config.json").read_text())
    assert record["encoder"] == "mobilenet_v2" and record["decoder_channels"] == [16, 16, 16, 16, 8]
    card = (folder / "MODEL_CARD.md").read_text()
    for expected in ("v0123456789ab", "val_iou", "0.5000", "## Intended use", "## Limitations"):
        assert expected in card

    loaded = load_detector_folder(folder, device="cpu")
    assert loaded.version == record["weights_sha256"]
    batch = np.random.default_rng(1).integers(0, 256, (2, 45, 70, 3), dtype=np.uint8)
    original = Detector(network, TINY, version="x", device="cpu").predict_proba(batch)
    np.testing.assert_allclose(loaded.predict_proba(batch), original, atol=1e-6)

    update_detector_metrics(folder, {"test_iou": 0.75})
    assert json.loads((folder / "metrics.json").read_text()) == {"val_iou": 0.5, "test_iou": 0.75}
    assert "test_iou" in (folder / "MODEL_CARD.md").read_text()


def test_local_encoder_weights_are_loaded(network: torch.nn.Module, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    weights = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in network.encoder.state_dict().items()}, str(weights))
    torch.manual_seed(123)  # a different random start, overwritten by the file
    rebuilt = build_network(TINY, encoder_weights=weights)
    for name, tensor in network.encoder.state_dict().items():
        assert torch.equal(rebuilt.encoder.state_dict()[name], tensor), name

    unrelated = tmp_path / "other.safetensors"
    save_file({"not.a.layer": torch.zeros(3)}, str(unrelated))
    with pytest.raises(DetectorError, match="same encoder"):
        build_network(TINY, encoder_weights=unrelated)
    with pytest.raises(DetectorError, match="does not exist"):
        build_network(TINY, encoder_weights=tmp_path / "missing.pth")


def test_loading_something_else_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="model.safetensors and config.json"):
        load_detector_folder(tmp_path)
