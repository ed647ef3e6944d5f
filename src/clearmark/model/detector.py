"""The watermark detector: the network, its configuration, saving and loading a folder.

A ``mask`` detector predicts where a watermark is (one channel: the footprint logit).  A
``matte`` detector also predicts how it was blended, ``J = alpha * W + (1 - alpha) * I``:
five channels, the footprint logit, the alpha logit and the mark's colour ``W`` (3 channels,
RGB through a sigmoid), so removal can invert the blend instead of inpainting.

A detector is a folder (``model.safetensors`` + ``config.json`` + ``MODEL_CARD.md`` +
``metrics.json``) written by :func:`save_detector` and read by :func:`load_detector_folder`.
The MLflow model is a pyfunc that wraps the same folder; :mod:`clearmark.model.loading`
resolves registry and run URIs to such a folder.  Heavy imports (torch, numpy, smp) stay
inside functions: ``clearmark.model.cli`` and the train DAG import this module at start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch

# The names the CLI, the DAG form (both through clearmark.model.train_config) and config
# files accept: smp class and encoder names (tests/code/test_model_detector.py checks them
# against smp's registries).  The list is short on purpose: these are the ones tried here.
# UnetPlusPlus and Linknet take every encoder here but the MiT (mit_*) ones, as smp says.
ARCHITECTURES: tuple[str, ...] = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Segformer", "Linknet")
ENCODERS: tuple[str, ...] = (
    "mit_b0",
    "mit_b1",
    "mit_b2",
    "mit_b5",
    "mobilenet_v2",
    "resnet18",
    "resnet34",
    "efficientnet-b0",
)
# MiT (SegFormer) encoders need inputs whose sides are multiples of 32.
PAD_MULTIPLE = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "MODEL_CARD.md"
METRICS_FILE = "metrics.json"
# What a network predicts, and its output channels: footprint logit [, alpha logit, W logits (RGB)].
OUTPUT_CHANNELS = {"mask": 1, "matte": 5}
Outputs = Literal["mask", "matte"]
# The backend name of a detector that runs its network as trained (float32, default layout).
EAGER = "torch-eager"


class NetworkRunner(Protocol):
    """What runs a served detector's network (an inference backend, :mod:`clearmark.model.backends`)."""

    name: str

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W logits for a normalised N x 3 x H x W float32 input."""
        ...


class DetectorError(RuntimeError):
    """A detector cannot be built or loaded; the message says what to do."""


@dataclass
class DetectorConfig:
    """What is needed to rebuild the network and turn its output into a mask."""

    architecture: str = "Unet"
    encoder: str = "mit_b0"
    image_size: int = 256  # training crop side; inference takes any size
    threshold: float = 0.5  # probability above which a pixel is watermark
    decoder_channels: list[int] | None = None  # None: smp's default; smaller is faster on CPU
    # Long side that removal downscales larger images to before detecting, i.e. the scale the
    # training data showed watermarks at (None: native resolution; CLEARMARK_REMOVAL_DETECT_SIDE overrides).
    detect_side: int | None = None
    # "mask" (the footprint only: older folders, which lack the key) or "matte" (also alpha and W).
    outputs: Outputs = "mask"

    def validate(self) -> DetectorConfig:
        """Raise :class:`DetectorError` naming the accepted values when a field is wrong."""
        if self.architecture not in ARCHITECTURES:
            raise DetectorError(f"Unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")
        if self.encoder not in ENCODERS:
            raise DetectorError(f"Unknown encoder {self.encoder!r}; choose one of {', '.join(ENCODERS)}.")
        if self.image_size < PAD_MULTIPLE or self.image_size % PAD_MULTIPLE:
            raise DetectorError(f"image_size must be a positive multiple of {PAD_MULTIPLE}, got {self.image_size}.")
        if self.decoder_channels is not None and (len(self.decoder_channels) != 5 or min(self.decoder_channels) < 1):
            raise DetectorError(f"decoder_channels must list 5 positive widths, got {self.decoder_channels}.")
        if self.detect_side is not None and self.detect_side < PAD_MULTIPLE:
            raise DetectorError(f"detect_side must be at least {PAD_MULTIPLE} px or null (native resolution), got {self.detect_side}.")
        if self.outputs not in OUTPUT_CHANNELS:
            raise DetectorError(f"outputs must be one of {', '.join(OUTPUT_CHANNELS)}, got {self.outputs!r}.")
        if not 0.0 < self.threshold < 1.0:
            raise DetectorError(f"threshold must lie strictly between 0 and 1, got {self.threshold}.")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        """Build from a ``config.json`` mapping, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known}).validate()


def build_network(config: DetectorConfig, encoder_weights: str | Path | None = None) -> torch.nn.Module:
    """An smp segmentation network with ``OUTPUT_CHANNELS[config.outputs]`` output channels (logits).

    ``encoder_weights`` is ``None`` (random initialisation: no model hub is reachable)
    or a local ``.safetensors`` / ``.pth`` file holding the encoder's state dict.
    """
    import segmentation_models_pytorch as smp

    config.validate()
    extra = {"decoder_channels": tuple(config.decoder_channels)} if config.decoder_channels else {}
    network = smp.create_model(config.architecture, encoder_name=config.encoder, encoder_weights=None, in_channels=3, classes=OUTPUT_CHANNELS[config.outputs], **extra)
    if encoder_weights is not None:
        _load_encoder_weights(network, Path(encoder_weights))
    return network


def _load_encoder_weights(network: torch.nn.Module, path: Path) -> None:
    """Load a local encoder state dict; keys the encoder lacks (classifier heads) are skipped."""
    import torch

    if not path.is_file():
        raise DetectorError(f"Encoder weights file {path} does not exist; pass a local .safetensors or .pth file, or no weights.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    encoder = network.encoder  # type: ignore[attr-defined]
    own = encoder.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise DetectorError(f"No tensor in {path} matches the encoder's parameters; is it for the same encoder?")
    encoder.load_state_dict(usable, strict=False)


def _pad_amount(side: int) -> int:
    return (-side) % PAD_MULTIPLE


class Detector:
    """A loaded network that maps RGB images to per-pixel watermark probabilities."""

    def __init__(self, network: torch.nn.Module, config: DetectorConfig, version: str, device: str | None = None) -> None:
        import torch

        self.config = config
        self.version = version
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network = network.to(self.device).eval()
        # What runs the network when serving (clearmark.model.backends.prepare_backend); None: the network as is.
        self.backend: NetworkRunner | None = None

    @property
    def backend_name(self) -> str:
        """The inference backend that runs the network (:data:`EAGER` when none was prepared)."""
        return self.backend.name if self.backend is not None else EAGER

    def predict_maps(self, batch: np.ndarray, *, chunk_size: int = 8) -> np.ndarray:
        """N x H x W x 3 uint8 RGB (any H, W) -> N x H x W x C float32 maps, all 0..1.

        C is 1 for a mask detector (the watermark probability) and 5 for a matte detector
        (probability, alpha, W as RGB).  Pads to a multiple of 32 internally (edge
        replication, so borders do not look like a frame), ImageNet-normalises and runs
        the network without gradients, through the detector's backend if it has one.
        """
        import numpy as np
        import torch

        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            got = f"{type(batch).__name__} {getattr(batch, 'shape', '')} {getattr(batch, 'dtype', '')}"
            raise ValueError(f"The detector expects an N x H x W x 3 uint8 RGB array, got {got}; convert images with PIL .convert('RGB').")
        n, height, width, _ = batch.shape
        run = self.backend.logits if self.backend is not None else self.network
        out = np.empty((n, height, width, OUTPUT_CHANNELS[self.config.outputs]), dtype=np.float32)
        # Toggling train/eval walks every module holding the GIL (milliseconds per call,
        # which starves the removal pipeline's other threads): only when training.
        was_training = self.network.training
        if was_training:
            self.network.eval()
        try:
            with torch.inference_mode():
                for start in range(0, n, chunk_size):
                    logits = run(self.network_input(batch[start : start + chunk_size]))[:, :, :height, :width]
                    out[start : start + chunk_size] = torch.sigmoid(logits.float()).permute(0, 2, 3, 1).cpu().numpy()
        finally:
            if was_training:
                self.network.train()
        return out

    def predict_proba(self, batch: np.ndarray, *, chunk_size: int = 8) -> np.ndarray:
        """N x H x W x 3 uint8 RGB (any H, W) -> N x H x W float32 watermark probabilities (either kind of detector)."""
        return self.predict_maps(batch, chunk_size=chunk_size)[..., 0]

    def predict_matte(self, batch: np.ndarray, *, chunk_size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A matte detector's (probability N x H x W, alpha N x H x W, colour W N x H x W x 3), float32 0..1."""
        if self.config.outputs != "matte":
            raise DetectorError(f"Detector {self.version} predicts only a mask (outputs={self.config.outputs!r}); train one with --outputs matte.")
        maps = self.predict_maps(batch, chunk_size=chunk_size)
        return maps[..., 0], maps[..., 1], maps[..., 2:5]

    def fold_batchnorm(self) -> int:
        """Fold every BatchNorm that directly follows a convolution into it; returns how many.

        Inference gets the same function with one pass over the activations fewer (about
        15 % faster on CPU for the mobilenet_v2 U-Net); the network can no longer be
        trained, so only serving code (:func:`clearmark.model.backends.prepare_backend`) calls this.
        """
        from torch import nn
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        self.network.eval()
        folded = 0
        for module in self.network.modules():
            if not isinstance(module, nn.Sequential):
                continue
            children = list(module._modules.items())
            for (conv_name, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
                    module._modules[bn_name] = nn.Identity()
                    folded += 1
        return folded

    def network_input(self, batch: np.ndarray) -> torch.Tensor:
        """N x H x W x 3 uint8 RGB -> the network's input: N x 3 x H' x W' float, ImageNet-normalised,
        edge-padded to multiples of 32 (so borders do not look like a frame)."""
        import torch
        import torch.nn.functional as F

        height, width = batch.shape[1:3]
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        if not batch.flags.writeable:  # e.g. np.asarray(PIL image): torch warns on read-only memory
            batch = batch.copy()
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0).sub_(mean).div_(std)
        return F.pad(x, (0, _pad_amount(width), 0, _pad_amount(height)), mode="replicate")


def _model_card(config: DetectorConfig, metrics: dict[str, Any], data_version: str | None, weights_sha256: str) -> str:
    """Markdown model card: what the model is, how good it is, what it is not for."""
    scalars = {k: v for k, v in metrics.items() if isinstance(v, str | int | float)}  # e.g. not a per-epoch history
    metric_lines = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(scalars.items()))
    return f"""# clearmark watermark detector

| field | value |
|---|---|
| architecture | {config.architecture} (segmentation-models-pytorch), {OUTPUT_CHANNELS[config.outputs]} output channels ({config.outputs}) |
| encoder | {config.encoder} |
| training image size | {config.image_size} px (inference: any size, padded to a multiple of {PAD_MULTIPLE}) |
| mask threshold | {config.threshold} |
| detection working size | {f"long side downscaled to {config.detect_side} px" if config.detect_side else "native resolution"} |
| training data version | {data_version or "unknown"} |
| weights SHA-256 | `{weights_sha256}` |

## Metrics

| metric | value |
|---|---|
{metric_lines or "| (none recorded) | |"}

## Intended use
Segment visible watermarks (text and logo overlays) in RGB photos so that the removal
pipeline can restore them. Input: 8-bit RGB, any size; output: per-pixel probability
that the pixel belongs to a watermark and, for a matte detector, the mark's opacity
(alpha) and colour (W), with which removal inverts the blend.

## Limitations
- Trained on the data version above only; measure it on your own images before trusting it
  (`clearmark evaluate`). Watermark styles absent from training (tiled patterns, very
  faint or very large marks) may be missed.
- Inference pads but never resizes: very large photos cost memory; the removal pipeline
  chooses the working resolution.
- The mask says where a watermark is, not whether removing it is lawful: use it only on
  images you have the rights to edit.
"""


def save_detector(
    network: torch.nn.Module,
    config: DetectorConfig,
    out_dir: str | Path,
    *,
    metrics: dict[str, Any] | None = None,
    data_version: str | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json``, ``MODEL_CARD.md`` and ``metrics.json``.

    The folder is written next to ``out_dir`` and renamed into place, so a crash never
    leaves half a detector behind.  Returns ``out_dir``.
    """
    from safetensors.torch import save_file

    from clearmark.storage import sha256_file

    config.validate()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        module = getattr(network, "module", network)  # unwrap DistributedDataParallel
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"architecture": config.architecture, "encoder": config.encoder})
        weights_sha256 = sha256_file(tmp / WEIGHTS_FILE)
        record = {**asdict(config), "data_version": data_version, "weights_sha256": weights_sha256, "created_at": datetime.now(UTC).isoformat()}
        (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
        (tmp / METRICS_FILE).write_text(json.dumps(metrics or {}, indent=2, sort_keys=True) + "\n")
        (tmp / CARD_FILE).write_text(_model_card(config, metrics or {}, data_version, weights_sha256))
        # mkdtemp makes a private folder; a detector is meant to be shared (containers, other users).
        tmp.chmod(0o755)
        for file in tmp.iterdir():
            file.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def update_detector_metrics(folder: str | Path, metrics: dict[str, Any], *, threshold: float | None = None) -> None:
    """Merge ``metrics`` into a saved detector's ``metrics.json`` and rewrite its model card.

    ``threshold`` also replaces the mask threshold in ``config.json`` (a calibration).
    """
    folder = Path(folder)
    record = json.loads((folder / CONFIG_FILE).read_text())
    if threshold is not None:
        record["threshold"] = threshold
        DetectorConfig.from_dict(record)  # validates the new threshold
        (folder / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    merged = {**json.loads((folder / METRICS_FILE).read_text()), **metrics}
    (folder / METRICS_FILE).write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    card = _model_card(DetectorConfig.from_dict(record), merged, record.get("data_version"), record["weights_sha256"])
    (folder / CARD_FILE).write_text(card)


def load_detector_folder(folder: str | Path, *, version: str | None = None, device: str | None = None) -> Detector:
    """Load a folder written by :func:`save_detector`; ``version`` defaults to the weights' SHA-256."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        raise DetectorError(f"{folder} is not a detector folder: it needs {WEIGHTS_FILE} and {CONFIG_FILE} (written by save_detector).")
    record = json.loads((folder / CONFIG_FILE).read_text())
    config = DetectorConfig.from_dict(record)
    network = build_network(config)
    network.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return Detector(network, config, version=version or record.get("weights_sha256", "unknown"), device=device)
