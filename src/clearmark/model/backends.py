"""Inference backends: the runtime that runs a served detector's network, chosen by what the machine has.

A detector loaded for serving (``load_detector(..., backend=...)``: removal, evaluation, the
gate, drift references, the benchmarks) gets one backend at load time; every
:mod:`clearmark.model.inference` function then runs through it, while pre-processing
(normalising, padding) and post-processing (sigmoid, masks, mattes) stay shared.  A
backend says whether this machine can run it and why not (:func:`backend_status`);
``auto`` takes the available one of highest ``rank``:

* ``torch-cuda-fp16``: torch on a CUDA GPU under float16 autocast, channels-last;
* ``openvino-int8``: ``openvino`` quantised to int8 by NNCF, calibrated on photo-train images;
  the first CPU choice (mask IoU within 0.01 of float32 on the bench's held-out set, and the
  fastest on both kinds of CPU); its quantised model is cached like ``openvino``'s;
* ``torch-cpu-bf16``: torch on the CPU under bfloat16 autocast, channels-last, only where
  the CPU has native bfloat16 (AVX-512 BF16 or AMX): emulated, it is 17x slower than float32;
* ``openvino``: the network converted to OpenVINO and compiled for the CPU in float32, with
  dynamic batch, height and width; the converted model is cached on disk by its weights
  (:func:`cache_folder`), so a fresh process compiles it from the cache in well under 2 s.
  Each thread has its own infer request, whose first inference at a new input shape waits
  for any other thread's (:meth:`OpenVino.logits`);
* ``torch-cpu-f32``: torch on the CPU in float32, channels-last (the fallback).

A detector not prepared for serving (training, the benchmarks' naive baselines) runs its
network as trained, float32 in the default layout (``torch-eager``, :data:`clearmark.model.detector.EAGER`).  Heavy imports (torch,
openvino) stay inside functions: ``clearmark remove --help`` lists the names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from clearmark.errors import ClearmarkError

if TYPE_CHECKING:
    import numpy as np
    import openvino
    import torch

    from clearmark.model.detector import Detector
    from clearmark.settings import Settings

AUTO = "auto"
MLFLOW_TAG = "inference_backend"  # evaluation and gate runs record the backend that scored them
# OpenVINO's input shape: any batch, height and width (the detector pads sides to multiples of 32).
SHAPE_POLICY = "dynamic-nchw"


class BackendError(ClearmarkError):
    """A backend that is unknown or that this machine cannot run."""

    hint = "Set CLEARMARK_INFERENCE_BACKEND=auto (or pass --backend auto) to use the best one this machine has."


class Backend:
    """One way to run a detector's network; instances hold what was prepared for one detector."""

    name: ClassVar[str]
    rank: ClassVar[int]  # auto picks the available backend of highest rank
    device: ClassVar[str]  # where the network's input lives: "cpu" or "cuda"

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this machine cannot run the backend, or ``None`` if it can."""
        return None

    @classmethod
    def unsupported(cls, detector: Detector) -> str | None:
        """Why the backend cannot run ``detector``'s network, or ``None`` if it can."""
        return None

    def __init__(self, detector: Detector, settings: Settings) -> None:
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's N x C x H x W logits for a normalised N x 3 x H x W float32 input on ``device``."""
        raise NotImplementedError


_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make ``cls`` a choice of ``CLEARMARK_INFERENCE_BACKEND`` and ``--backend``."""
    _BACKENDS[cls.name] = cls
    return cls


def available_backends() -> list[str]:
    """Every registered name, best first (what ``auto`` would try in turn), whether or not this machine has it."""
    return sorted(_BACKENDS, key=lambda name: -_BACKENDS[name].rank)


def backend_status() -> dict[str, str | None]:
    """Each registered backend, best first: ``None`` where this machine can run it, else why not."""
    return {name: _BACKENDS[name].unavailable() for name in available_backends()}


def choose_backend(name: str, detector: Detector | None = None) -> type[Backend]:
    """The backend ``name``; ``auto``: the available one of highest rank (that runs ``detector``, if given).
    Raises :class:`BackendError`."""
    if name == AUTO:
        return next(
            _BACKENDS[n] for n, why in backend_status().items() if why is None and (detector is None or _BACKENDS[n].unsupported(detector) is None)
        )
    if name not in _BACKENDS:
        raise BackendError(f"Unknown inference backend {name!r}; choose one of {AUTO}, {', '.join(available_backends())}.")
    if why := _BACKENDS[name].unavailable():
        raise BackendError(f"The inference backend {name!r} cannot run on this machine: {why}.")
    if detector is not None and (why := _BACKENDS[name].unsupported(detector)):
        raise BackendError(f"The inference backend {name!r} cannot run detector {detector.version}: {why}.")
    return _BACKENDS[name]


def prepare_backend(detector: Detector, name: str, settings: Settings) -> Backend:
    """Make ``detector`` a served one: BatchNorm folded and ``name`` (or ``auto``'s choice) running its network."""
    backend = choose_backend(name, detector)
    detector.fold_batchnorm()
    detector.backend = backend(detector, settings)
    return detector.backend


class _TorchBackend(Backend):
    """torch eager in channels-last layout (oneDNN and cuDNN convolve NHWC faster), under ``autocast``."""

    autocast: ClassVar[str | None] = None  # a torch dtype's name

    def __init__(self, detector: Detector, settings: Settings) -> None:
        import torch

        detector.device = torch.device(self.device)
        self.network = detector.network.to(self.device, memory_format=torch.channels_last)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        precision = torch.autocast(self.device, dtype=getattr(torch, self.autocast)) if self.autocast else contextlib.nullcontext()
        with precision:
            return self.network(x.contiguous(memory_format=torch.channels_last))


@register_backend
class TorchCudaFp16(_TorchBackend):
    name, rank, device, autocast = "torch-cuda-fp16", 40, "cuda", "float16"

    @classmethod
    def unavailable(cls) -> str | None:
        import torch

        return None if torch.cuda.is_available() else "torch sees no CUDA GPU"


def native_bfloat16() -> bool:
    """Whether torch's CPU kernels may use native bfloat16: the CPU has AVX-512 BF16 or AMX, and
    torch's capability (``ATEN_CPU_CAPABILITY`` may lower it) is above AVX2."""
    import torch

    flags = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return flags and torch.backends.cpu.get_cpu_capability() not in ("DEFAULT", "AVX2")


@register_backend
class TorchCpuBf16(_TorchBackend):
    name, rank, device, autocast = "torch-cpu-bf16", 30, "cpu", "bfloat16"

    @classmethod
    def unavailable(cls) -> str | None:
        import torch

        if native_bfloat16():
            return None
        return (
            f"the CPU has no native bfloat16 (AVX-512 BF16 or AMX; torch CPU capability {torch.backends.cpu.get_cpu_capability()}), "
            "and emulated bfloat16 is about 17x slower than float32"
        )


@register_backend
class TorchCpuF32(_TorchBackend):
    name, rank, device = "torch-cpu-f32", 10, "cpu"


def weights_digest(network: torch.nn.Module) -> str:
    """SHA-256 of a network's state (names, shapes, dtypes and bytes of every tensor)."""
    digest = hashlib.sha256()
    for key, tensor in network.state_dict().items():
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_folder(settings: Settings, detector: Detector, backend: str, runtime_version: str) -> tuple[Path, dict[str, str]]:
    """Where ``backend``'s converted model of ``detector`` lives: ``<cache_dir>/inference/<backend>/<key>/``.

    The key covers everything the converted model depends on: the weights (after BatchNorm
    folding), the network's configuration, the input-shape policy and the versions of
    clearmark, torch and the runtime.  Returns the folder and the key's fields.
    """
    import torch

    import clearmark

    config = detector.config
    fields = {
        "weights_sha256": weights_digest(detector.network),
        "network": f"{config.architecture}/{config.encoder}/{config.decoder_channels}/{config.outputs}",
        "backend": backend,
        "shape_policy": SHAPE_POLICY,
        "clearmark": clearmark.__version__,
        "torch": torch.__version__,
        "runtime": runtime_version,
    }
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
    return settings.cache_dir / "inference" / backend / key, fields


def openvino_version() -> str:
    import openvino

    return openvino.get_version()


@register_backend
class OpenVino(Backend):
    name, rank, device = "openvino", 20, "cpu"
    MODEL_FILE = "model.xml"  # with model.bin beside it

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import openvino
        except ImportError:
            return "the openvino package is not installed (pip install openvino)"
        if "CPU" not in openvino.Core().available_devices:
            return "OpenVINO finds no CPU device it supports"
        return None

    def __init__(self, detector: Detector, settings: Settings) -> None:
        import openvino
        import torch

        from clearmark.model.inference import detect_workers, usable_cores

        detector.device = torch.device("cpu")
        detector.network.to("cpu")
        folder, key = cache_folder(settings, detector, self.name, self.runtime_version())
        if not (folder / self.MODEL_FILE).is_file():
            _publish_openvino_model(self.convert(detector), folder, key)
        # Threads: one stream per removal detector thread, all usable cores between them.
        # CACHE_DIR keeps the compiled blob too, so later processes skip compiling.
        self.compiled = openvino.Core().compile_model(
            str(folder / self.MODEL_FILE),
            "CPU",
            {
                "CACHE_DIR": str(folder / "compiled"),
                "INFERENCE_PRECISION_HINT": "f32",
                "NUM_STREAMS": detect_workers(detector, settings),
                "INFERENCE_NUM_THREADS": usable_cores(),
            },
        )
        self._requests = threading.local()  # an infer request serves one thread at a time
        # A request's first inference at an input shape specialises the dynamic model for it
        # (shape inference, memory, kernel choice). Several at once on few cores are the suspect
        # of a hang seen once (both detector threads in infer for 45 minutes), so they take
        # turns; later inferences at a shape the request has run stay concurrent.
        self._specialising = threading.Lock()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        state = self._requests
        if not hasattr(state, "request"):
            state.request, state.shapes = self.compiled.create_infer_request(), set()
        shape = tuple(x.shape)
        with contextlib.nullcontext() if shape in state.shapes else self._specialising:
            logits = torch.from_numpy(state.request.infer([x.numpy()])[0])
        state.shapes.add(shape)
        return logits


    @classmethod
    def runtime_version(cls) -> str:
        """What the converted model depends on besides the detector (part of its cache key)."""
        return openvino_version()

    @classmethod
    def convert(cls, detector: Detector) -> openvino.Model:
        """The network as an OpenVINO model with dynamic N, H and W, in float32."""
        import openvino
        import torch

        example = torch.zeros(1, 3, 64, 64)
        return openvino.convert_model(detector.network.eval(), example_input=example, input=[openvino.PartialShape([-1, 3, -1, -1])])


# Calibration of the int8 model: photo-train pairs (never the bench's held-out photos, fonts or
# marks) of this seed, at the detector's working size; 64 as NNCF's examples use for CNNs.
CALIBRATION_IMAGES, CALIBRATION_SEED = 64, 8128


@register_backend
class OpenVinoInt8(OpenVino):
    """``openvino`` with int8 weights and activations: NNCF post-training quantisation.

    Calibrated once per detector version on photo-train images and cached like ``openvino``'s
    model. ``auto``'s first choice on a CPU: on the bench's held-out set its mask IoU is within
    0.01 of the float32 network's, and removal ran 1.9x faster than ``torch-cpu-bf16`` with
    native bfloat16 and 1.8x faster than ``openvino`` under emulated AVX2 (docs/performance.md,
    "Inference backends").
    """

    name, rank = "openvino-int8", 35

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import nncf  # noqa: F401
        except ImportError:
            return "the nncf package is not installed (pip install nncf)"
        return super().unavailable()

    @classmethod
    def unsupported(cls, detector: Detector) -> str | None:
        import torch

        if any(isinstance(module, torch.nn.Linear) for module in detector.network.modules()):
            # Quantised, the linear layers of attention encoders (mit_*) fail OpenVINO's shape
            # inference at any input size but the calibration's (dequantisation per token).
            return "its int8 model of a network with linear (attention or MLP) layers runs only at the calibration's input size"
        return None

    @classmethod
    def runtime_version(cls) -> str:
        import nncf

        return f"{openvino_version()}/nncf {nncf.__version__}/calibration {CALIBRATION_IMAGES}x{CALIBRATION_SEED}"

    @classmethod
    def convert(cls, detector: Detector) -> openvino.Model:
        import nncf

        inputs = calibration_inputs(detector, CALIBRATION_IMAGES, CALIBRATION_SEED)
        return nncf.quantize(super().convert(detector), nncf.Dataset(inputs), subset_size=len(inputs), preset=nncf.QuantizationPreset.MIXED)


def calibration_inputs(detector: Detector, count: int, seed: int) -> list[np.ndarray]:
    """``count`` photo-train images of ``seed`` at ``detector``'s working size, as its network's 1 x 3 x H x W inputs."""
    import numpy as np
    from PIL import Image

    from clearmark.data.synth import generate_synthetic

    side = detector.config.detect_side or detector.config.image_size
    with tempfile.TemporaryDirectory(prefix="clearmark-calibration-") as folder:
        summary = generate_synthetic(Path(folder), count, seed, size=side, styles="photo-train", jpeg_quality=(70, 98), progress=False)
        images = [np.asarray(Image.open(summary.out_dir / "watermarked" / item.name).convert("RGB")) for item in summary.items]
    return [detector.network_input(image[None]).cpu().numpy() for image in images]  # normalised and padded as served


def _publish_openvino_model(model: openvino.Model, folder: Path, key: dict[str, str]) -> None:
    """Save ``model`` into ``folder`` atomically (first writer wins)."""
    import openvino

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        # Weights stay float32: the default (float16 storage) would change the predictions.
        openvino.save_model(model, str(staging / OpenVino.MODEL_FILE), compress_to_fp16=False)
        (staging / "key.json").write_text(json.dumps(key, indent=2) + "\n")
        with contextlib.suppress(OSError):  # another process published the same key first: keep theirs
            os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
