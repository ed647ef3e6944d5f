"""Inference backends: choice by capability, forcing one, the on-disk cache, and what the report records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clearmark.model import backends
from clearmark.model.backends import AUTO, BackendError, available_backends, backend_status, choose_backend, prepare_backend
from clearmark.model.detector import EAGER, Detector, DetectorConfig, build_network, load_detector_folder, save_detector
from clearmark.settings import Settings
from tests.support.hostile_archives import tiny_detector_folder, watermarked_rgb

TINY = DetectorConfig(architecture="Unet", encoder="mobilenet_v2", image_size=64, decoder_channels=[16, 16, 16, 16, 8])


def _skip_unless_available(name: str) -> None:
    if why := backend_status()[name]:
        pytest.skip(f"{name}: {why}")


def _tiny(seed: int, outputs: str = "mask") -> Detector:
    torch.manual_seed(seed)
    config = DetectorConfig(**{**TINY.__dict__, "outputs": outputs})
    return Detector(build_network(config).eval(), config, version=f"tiny-{seed}", device="cpu")


def test_auto_takes_the_available_backend_of_highest_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    ranked = [backends._BACKENDS[name] for name in available_backends()]
    assert [b.rank for b in ranked] == sorted((b.rank for b in ranked), reverse=True)
    assert available_backends()[-1] == "torch-cpu-f32" and backend_status()["torch-cpu-f32"] is None  # the fallback
    for cls in ranked:  # a machine with nothing but the fallback...
        monkeypatch.setattr(cls, "unavailable", classmethod(lambda cls: None if cls.name == "torch-cpu-f32" else "not here"))
    assert choose_backend(AUTO).name == "torch-cpu-f32"
    # ...and one that also has OpenVINO (an AVX2-only CPU): OpenVINO wins over the fallback.
    monkeypatch.setattr(backends.OpenVino, "unavailable", classmethod(lambda cls: None))
    assert choose_backend(AUTO).name == "openvino"
    monkeypatch.setattr(backends.TorchCpuBf16, "unavailable", classmethod(lambda cls: None))
    assert choose_backend(AUTO).name == "torch-cpu-bf16"
    # With NNCF too, int8 comes first on either kind of CPU (docs/performance.md: the fastest, IoU within 0.01).
    monkeypatch.setattr(backends.OpenVinoInt8, "unavailable", classmethod(lambda cls: None))
    assert choose_backend(AUTO).name == "openvino-int8"


def test_a_forced_backend_is_used_or_refused_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="Unknown inference backend 'tensorrt'; choose one of auto, torch-cuda-fp16, .*torch-cpu-f32") as unknown:
        choose_backend("tensorrt")
    assert "CLEARMARK_INFERENCE_BACKEND=auto" in str(unknown.value)
    monkeypatch.setattr(backends.OpenVino, "unavailable", classmethod(lambda cls: "the openvino package is not installed"))
    with pytest.raises(BackendError, match="'openvino' cannot run on this machine: the openvino package is not installed"):
        choose_backend("openvino")
    assert choose_backend("torch-cpu-f32") is backends.TorchCpuF32


def test_bfloat16_needs_native_support(monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulated bf16 is 17x slower than float32: without AVX-512 BF16 / AMX the backend says why it is off."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert "no native bfloat16" in backend_status()["torch-cpu-bf16"]
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert "torch CPU capability AVX2" in backend_status()["torch-cpu-bf16"]
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert backend_status()["torch-cpu-bf16"] is None


@pytest.mark.parametrize("name", available_backends())
@pytest.mark.parametrize("outputs", ["mask", "matte"])
def test_every_backend_runs_mask_and_matte_detectors_like_float32(name: str, outputs: str, tmp_path: Path) -> None:
    """Shared pre- and post-processing around each backend's network: same shapes, same maps within precision."""
    _skip_unless_available(name)
    batch = np.stack([watermarked_rgb(70, 45, seed) for seed in range(2)])  # sides not multiples of 32: padded
    exact = _tiny(11, outputs).predict_maps(batch)
    detector = _tiny(11, outputs)
    prepare_backend(detector, name, Settings(home=tmp_path))
    assert detector.backend_name == name and detector.device.type == backends._BACKENDS[name].device
    maps = detector.predict_maps(batch)
    assert maps.shape == exact.shape == (2, 70, 45, 5 if outputs == "matte" else 1) and maps.dtype == np.float32
    reduced = name in ("torch-cpu-bf16", "torch-cuda-fp16", "openvino-int8")
    assert np.abs(maps - exact).max() <= (0.1 if reduced else 1e-4)


def test_int8_leaves_networks_with_linear_layers_to_the_next_backend(tmp_path: Path) -> None:
    """A mit_* encoder's attention: its int8 model fails at any input size but the calibration's."""
    _skip_unless_available("openvino-int8")
    torch.manual_seed(5)
    config = DetectorConfig(architecture="Unet", encoder="mit_b0", image_size=64)
    detector = Detector(build_network(config).eval(), config, version="mit-tiny", device="cpu")
    assert "linear (attention or MLP) layers" in backends.OpenVinoInt8.unsupported(detector)
    with pytest.raises(BackendError, match="'openvino-int8' cannot run detector mit-tiny: its int8 model of a network with linear"):
        choose_backend("openvino-int8", detector)
    prepare_backend(detector, AUTO, Settings(home=tmp_path))
    assert detector.backend_name == next(name for name, why in backend_status().items() if why is None and name != "openvino-int8")
    batch = np.stack([watermarked_rgb(70, 45, seed) for seed in range(2)])
    assert detector.predict_maps(batch).shape == (2, 70, 45, 1)  # other sizes than any calibration


def test_int8_quantises_once_per_version_on_photo_train_calibration_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_unless_available("openvino-int8")
    import nncf

    calls: list[int] = []
    quantize = nncf.quantize
    monkeypatch.setattr(nncf, "quantize", lambda model, dataset, **kwargs: calls.append(kwargs["subset_size"]) or quantize(model, dataset, **kwargs))
    settings = Settings(home=tmp_path)
    prepare_backend(_tiny(31), "openvino-int8", settings)
    prepare_backend(_tiny(31), "openvino-int8", settings)  # a fresh process's load of the same weights: the cache
    assert calls == [backends.CALIBRATION_IMAGES]
    (folder,) = (settings.cache_dir / "inference" / "openvino-int8").iterdir()
    assert f"nncf {nncf.__version__}" in json.loads((folder / "key.json").read_text())["runtime"]
    inputs = backends.calibration_inputs(_tiny(31), 3, backends.CALIBRATION_SEED)
    assert [x.shape for x in inputs] == [(1, 3, 64, 64)] * 3 and inputs[0].dtype == np.float32
    assert not np.array_equal(inputs[0], inputs[1])  # distinct photos


def test_openvino_reuses_its_cached_model_and_another_version_gets_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _skip_unless_available("openvino")
    import openvino

    conversions: list[int] = []
    convert = openvino.convert_model
    monkeypatch.setattr(openvino, "convert_model", lambda *args, **kwargs: conversions.append(1) or convert(*args, **kwargs))
    settings = Settings(home=tmp_path)
    first = _tiny(21)
    prepare_backend(first, "openvino", settings)
    assert len(conversions) == 1
    (folder,) = (settings.cache_dir / "inference" / "openvino").iterdir()
    key = json.loads((folder / "key.json").read_text())
    assert key["backend"] == "openvino" and key["shape_policy"] == "dynamic-nchw" and len(key["weights_sha256"]) == 64
    assert {p.name for p in folder.iterdir()} >= {"model.xml", "model.bin", "key.json", "compiled"}

    again = _tiny(21)  # a fresh process's load of the same weights
    prepare_backend(again, "openvino", settings)
    assert len(conversions) == 1  # compiled from the cache, not converted again
    batch = np.stack([watermarked_rgb(96, 128, 3)])
    np.testing.assert_array_equal(again.predict_maps(batch), first.predict_maps(batch))

    prepare_backend(_tiny(22), "openvino", settings)  # other weights: another model version
    assert len(conversions) == 2 and len(list((settings.cache_dir / "inference" / "openvino").iterdir())) == 2
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_openvino_takes_any_image_size_and_serves_threads_at_once(tmp_path: Path) -> None:
    _skip_unless_available("openvino")
    from concurrent.futures import ThreadPoolExecutor

    detector = _tiny(31)
    prepare_backend(detector, "openvino", Settings(home=tmp_path, removal_detect_workers=2))
    exact = _tiny(31)
    batches = [np.stack([watermarked_rgb(h, w, i)] * n) for i, (n, h, w) in enumerate([(1, 64, 64), (3, 130, 31), (2, 200, 301)])]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(detector.predict_maps, batches * 2))
    for batch, maps in zip(batches * 2, results, strict=True):
        np.testing.assert_allclose(maps, exact.predict_maps(batch), atol=1e-4)


def test_openvino_first_inferences_at_a_new_shape_take_turns_while_later_ones_run_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent shape specialisation of the dynamic model is the suspect of a hang seen once: each
    request's first inference at a shape waits for the others' (real runtime, threads and shapes;
    bounded by join timeouts), the outputs are torch float32's, and later inferences do not wait."""
    _skip_unless_available("openvino")
    import itertools
    import threading
    import time

    import openvino

    threads, rounds = 4, 2
    shapes = [(1, 64, 64), (2, 96, 160), (1, 130, 31), (3, 200, 96)]  # (n, h, w) before padding
    batches = [np.stack([watermarked_rgb(h, w, i)] * n) for i, (n, h, w) in enumerate(shapes)]
    detector = _tiny(41)
    prepare_backend(detector, "openvino", Settings(home=tmp_path, removal_detect_workers=threads))
    calls: list[tuple[int, tuple[int, ...], float, float]] = []  # thread, input shape, start, end
    infer = openvino.InferRequest.infer

    def timed_infer(request: openvino.InferRequest, inputs: list[np.ndarray]) -> object:
        started = time.perf_counter()
        result = infer(request, inputs)
        calls.append((threading.get_ident(), inputs[0].shape, started, time.perf_counter()))
        return result

    monkeypatch.setattr(openvino.InferRequest, "infer", timed_infer)
    start = threading.Barrier(threads)
    results: dict[tuple[int, int], np.ndarray] = {}

    def detect(worker: int) -> None:
        start.wait()  # every thread's first inference at the first shape begins together
        for index in [*range(worker, len(shapes)), *range(worker)] * rounds:  # each its own order
            results[worker, index] = detector.predict_maps(batches[index])

    workers = [threading.Thread(target=detect, args=(worker,), daemon=True) for worker in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert not any(worker.is_alive() for worker in workers), "OpenVINO inference hung"
    assert len(results) == threads * len(shapes)

    exact = _tiny(41)
    for (_, index), maps in results.items():
        np.testing.assert_allclose(maps, exact.predict_maps(batches[index]), atol=1e-4)
    first: dict[tuple[int, tuple[int, ...]], tuple[float, float]] = {}
    for thread, shape, started, ended in sorted(calls, key=lambda call: call[2]):
        first.setdefault((thread, shape), (started, ended))
    assert len(first) == threads * len(shapes) and len(calls) == rounds * len(first)
    spans = sorted(first.values())
    assert all(ended <= next_started for (_, ended), (next_started, _) in itertools.pairwise(spans)), "two first inferences overlapped"

    # A shape a thread has run needs no turn: it runs again while another thread holds the turn.
    warm, go = threading.Event(), threading.Event()

    def again() -> None:
        detector.predict_maps(batches[0])
        warm.set()
        go.wait()
        detector.predict_maps(batches[0])

    steady = threading.Thread(target=again, daemon=True)
    steady.start()
    assert warm.wait(timeout=60)
    with detector.backend._specialising:
        go.set()
        steady.join(timeout=60)
        assert not steady.is_alive(), "an inference at a shape its request had run waited for a turn"


def test_served_detectors_follow_the_setting_and_the_report_records_the_backend(tmp_path: Path) -> None:
    from clearmark.removal.runner import get_detector, run_removal

    folder = tiny_detector_folder(tmp_path / "det", finds_everything=True)
    settings = Settings(home=tmp_path / "home", inference_backend="torch-cpu-f32")
    served = get_detector(settings, str(folder))
    assert served.backend_name == "torch-cpu-f32" and not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.network.modules())
    assert get_detector(settings, str(folder)) is served
    assert get_detector(settings, str(folder), backend=AUTO).backend_name == choose_backend(AUTO, served).name  # auto for this network (mit_b0: not int8)
    assert load_detector_folder(folder).backend_name == EAGER  # not served: the network as trained

    photos = tmp_path / "in"
    photos.mkdir()
    from PIL import Image

    Image.fromarray(watermarked_rgb(64, 80, 1)).save(photos / "a.png")
    outputs = run_removal(settings, photos, tmp_path / "out.zip", model=str(folder))
    assert json.loads(outputs.report_json.read_text())["backend"] == "torch-cpu-f32"
    with pytest.raises(BackendError, match="Unknown inference backend 'fastest'"):
        run_removal(settings, photos, tmp_path / "out2.zip", model=str(folder), backend="fastest")


def test_remove_backend_option_is_listed_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from clearmark.cli import app
    from clearmark.settings import get_settings

    monkeypatch.setenv("CLEARMARK_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    help_text = " ".join(CliRunner().invoke(app, ["remove", "--help"], terminal_width=200).output.split())
    for name in (AUTO, *available_backends()):
        assert name in help_text
    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(watermarked_rgb(64, 64, 2)).save(photos / "a.png")
    model = save_detector(build_network(TINY), TINY, tmp_path / "det")
    result = CliRunner().invoke(app, ["remove", str(photos), str(tmp_path / "out"), "--model", str(model), "--backend", "torch-cpu-f32"])
    assert result.exit_code == 0, result.output
    assert "on torch-cpu-f32" in result.output
    assert json.loads((tmp_path / "out.report.json").read_text())["backend"] == "torch-cpu-f32"
    refused = CliRunner().invoke(app, ["remove", str(photos), str(tmp_path / "out3"), "--model", str(model), "--backend", "nope"])
    assert refused.exit_code == 1 and "Unknown inference backend 'nope'" in refused.output
    get_settings.cache_clear()
