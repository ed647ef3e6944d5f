"""What a training run takes, declared once: the fields of :class:`TrainConfig`.

Each field's metadata (:func:`option`) holds its help text, its bounds as a JSON schema and
how the command line writes it.  ``clearmark train`` builds its options from these fields,
the train DAG builds its form (Params) from them, and :func:`cli_arguments` turns the form's
values back into the same command line.  Standard library only: the DAG file imports this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

from clearmark.model.detector import ARCHITECTURES, ENCODERS, OUTPUT_CHANNELS, PAD_MULTIPLE
from clearmark.model.registry import CHAMPION

if TYPE_CHECKING:
    from clearmark.model.detector import DetectorConfig


class TrainingError(RuntimeError):
    """Training stopped for a reason the user can act on (the message says how)."""


@dataclass(frozen=True)
class OptionSpec:
    """How one training option is offered: on the command line and in the DAG form."""

    help: str
    schema: Mapping[str, Any]  # JSON schema of a form value (the CLI's own bounds come from it too)
    none_means: str | None = None  # what a None default stands for, shown as the default
    text: Callable[[str], Any] | None = None  # the CLI reads this option as text and converts it
    text_default: str | None = None  # the default as that text, if the field's default is not written as is
    local_only: str | None = None  # why the DAG form leaves the option out
    settings_default: str | None = None  # the Settings field a None default stands for


def option(default: Any, help: str, schema: Mapping[str, Any] | None = None, **spec: Any) -> Any:  # noqa: A002 - help text
    """A :class:`TrainConfig` field with its :class:`OptionSpec`."""
    return field(default=default, metadata={"option": OptionSpec(help, schema or {}, **spec)})


# The network a run builds when it trains from scratch and leaves a network option open.
FROM_SCRATCH: Mapping[str, Any] = {"architecture": "Unet", "encoder": "mit_b0", "decoder_channels": None, "outputs": "mask"}

def _open_network_option(name: str) -> str:
    """What an open network option stands for, as ``--help`` and the DAG form say it."""
    scratch = FROM_SCRATCH[name] if FROM_SCRATCH[name] is not None else "the architecture's own"
    return f"the --init-from detector's, else {scratch}"


def parse_detect_side(value: str) -> int | None:
    """``--detect-side``: ``auto`` -> None (taken from the training data), else a whole number of pixels (0: native)."""
    if value.strip().lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise TrainingError(f"--detect-side must be auto, 0 (native resolution) or a number of pixels, got {value!r}.") from None


def parse_decoder_channels(value: str) -> list[int]:
    """``--decoder-channels 128,64,32,16,16`` -> five decoder widths."""
    try:
        return [int(width) for width in value.split(",")]
    except ValueError:
        raise TrainingError(f"--decoder-channels takes five comma-separated whole numbers (e.g. 128,64,32,16,16), got {value!r}.") from None


ON_THE_TRAINER = "a path on the machine that runs the trainer"
POSITIVE = {"exclusiveMinimum": 0}
LOSS_WEIGHT = {"type": "number", "minimum": 0, "maximum": 100}


@dataclass
class TrainConfig:
    """Everything a training run needs besides :class:`Settings`; each field is one ``clearmark train`` option."""

    dataset: str | None = option(None, "Curated dataset name.", {"type": "string", "minLength": 1}, none_means="settings.dataset", settings_default="dataset")
    dataset_version: str = option(
        "latest", "Published version to train, or latest.", {"type": "string", "pattern": "^(latest|v[0-9a-f]{12})$"}
    )
    data_dir: Path | None = option(
        None,
        "Local folder (curated layout or `clearmark synth` output) instead of object storage.",
        none_means="object storage",
        local_only="the DAG trains from the lake; a folder would be " + ON_THE_TRAINER,
    )
    # The network options: None takes the --init-from detector's (fine-tuning needs the same
    # network), or FROM_SCRATCH's when there is none.
    architecture: str | None = option(
        None, "smp architecture.", {"type": ["null", "string"], "enum": [None, *ARCHITECTURES]}, none_means=_open_network_option("architecture")
    )
    encoder: str | None = option(
        None,
        "smp encoder; mit_b5 is the reference design (GPU), mit_b0 / mobilenet_v2 suit a CPU.",
        {"type": ["null", "string"], "enum": [None, *ENCODERS]},
        none_means=_open_network_option("encoder"),
    )
    decoder_channels: list[int] | None = option(
        None,
        "Five comma-separated U-Net decoder widths, e.g. 128,64,32,16,16 (smaller is faster on a CPU).",
        {"type": ["null", "string"], "pattern": "^[1-9][0-9]*(,[1-9][0-9]*){4}$"},
        none_means=_open_network_option("decoder_channels"),
        text=parse_decoder_channels,
    )
    outputs: Literal["mask", "matte"] | None = option(
        None,
        "What the network predicts: mask (where the watermark is) or matte (also its opacity alpha and colour W, so removal can unblend).",
        {"type": ["null", "string"], "enum": [None, *OUTPUT_CHANNELS]},
        none_means=_open_network_option("outputs"),
    )
    image_size: int = option(256, "Training crop side in pixels (multiple of 32).", {"type": "integer", "minimum": 64, "maximum": 1024, "multipleOf": PAD_MULTIPLE})
    # Long side removal downscales photos to (DetectorConfig.detect_side). None: the --init-from
    # detector's, else the training images' median long side, the scale the native-resolution
    # crops showed watermarks at.
    detect_side: int | None = option(
        None,
        "Long side removal downscales photos to before detecting: auto (the --init-from detector's, else the training images' median long side), 0 (native resolution) or pixels (at least 32).",
        {"type": "string", "pattern": "^(auto|0|[1-9][0-9]*)$"},
        text=parse_detect_side,
        text_default="auto",
    )
    # 3, the train DAG's default: the Asset-triggered run of `make demo` trains with it.
    epochs: int = option(3, "Epochs to train (early stopping may end sooner).", {"type": "integer", "minimum": 1, "maximum": 500})
    batch_size: int = option(8, "Images per training step.", {"type": "integer", "minimum": 1, "maximum": 256})
    learning_rate: float = option(1e-3, "Peak learning rate of AdamW.", {"type": "number", **POSITIVE, "maximum": 1})
    weight_decay: float = option(1e-4, "AdamW weight decay.", {"type": "number", "minimum": 0})
    scheduler: Literal["onecycle", "cosine"] = option("onecycle", "Learning-rate schedule.", {"type": "string", "enum": ["onecycle", "cosine"]})
    seed: int = option(42, "Random seed of weights, augmentations and sampling.", {"type": "integer", "minimum": 0})
    patience: int = option(5, "Epochs without a better validation score (IoU, less the alpha error of a matte network) before stopping.", {"type": "integer", "minimum": 1})
    max_minutes: float | None = option(
        None, "Stop after the epoch that passes this much training time.", {"type": ["null", "number"], **POSITIVE}, none_means="no limit"
    )
    # Weights of a matte network's loss terms beside the footprint's Dice + BCE (weight 1);
    # each term counts only the pairs whose target is known (train.loss_terms).
    alpha_loss_weight: float = option(4.0, "Matte networks: weight of the L1 loss on alpha (inside and outside the mask alike).", LOSS_WEIGHT)
    colour_loss_weight: float = option(1.0, "Matte networks: weight of the L1 loss on the colour W, weighted by the true alpha.", LOSS_WEIGHT)
    reconstruction_loss_weight: float = option(
        1.0, "Matte networks: weight of the L1 loss of the unblended image (J - alpha W) / (1 - alpha) against the clean one, inside the mask.", LOSS_WEIGHT
    )
    threshold: float = option(0.5, "Probability above which a pixel is watermark (calibrated after training).", {"type": "number", **POSITIVE, "exclusiveMaximum": 1})
    resume: Path | None = option(None, "last.pt checkpoint of an interrupted run.", none_means="a new run", local_only=ON_THE_TRAINER)
    num_workers: int | None = option(None, "DataLoader workers.", {"type": ["null", "integer"], "minimum": 0}, none_means="0 on CPU, 4 on GPU")
    encoder_weights: Path | None = option(
        None, "Local pretrained encoder weights (.safetensors/.pth).", none_means="random initialisation", local_only=ON_THE_TRAINER
    )
    init_from: str | None = option(
        None,
        f"Fine-tune this detector: a folder, a models:/ URI, or {CHAMPION} (the registered model's champion, fixed to its version when the run starts); the network options default to its own.",
        {"type": ["null", "string"], "minLength": 1},
        none_means="train from scratch",
    )
    checkpoint_dir: Path | None = option(
        None, "Where checkpoints go.", none_means="checkpoints/<run id> in CLEARMARK_HOME", local_only=ON_THE_TRAINER
    )
    max_val_images: int = option(256, "Validation pairs each epoch looks at, at most.", {"type": "integer", "minimum": 1})
    threads: int | None = option(None, "torch CPU threads.", {"type": ["null", "integer"], "minimum": 1}, none_means="torch's default")
    run_name: str | None = option(None, "MLflow run name.", none_means="MLflow's generated name", local_only="the DAG names the run after its own run id")

    def with_network_of(self, start: DetectorConfig | None) -> TrainConfig:
        """This config with its open network options filled in: ``start``'s (the --init-from detector's), else FROM_SCRATCH's."""
        def chosen(name: str) -> Any:
            if getattr(self, name) is not None:
                return getattr(self, name)
            return getattr(start, name) if start is not None else FROM_SCRATCH[name]

        return replace(self, **{name: chosen(name) for name in FROM_SCRATCH})

    def detector_config(self) -> DetectorConfig:
        """The detector part of this config, checked (open network options as from scratch)."""
        from clearmark.model.detector import DetectorConfig

        network = self.with_network_of(None)
        return DetectorConfig(
            network.architecture, network.encoder, self.image_size, self.threshold, network.decoder_channels, outputs=network.outputs
        ).validate()

    def validate(self) -> TrainConfig:
        """Raise :class:`TrainingError` for values that cannot train."""
        self.detector_config()
        for name in ("epochs", "batch_size", "patience", "max_val_images"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.detect_side is not None and self.detect_side != 0 and self.detect_side < PAD_MULTIPLE:
            raise TrainingError(f"detect_side must be 0 (native resolution) or at least {PAD_MULTIPLE} px, got {self.detect_side}.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise TrainingError(f"max_minutes must be positive, got {self.max_minutes}.")
        for name in ("alpha_loss_weight", "colour_loss_weight", "reconstruction_loss_weight"):
            if getattr(self, name) < 0:
                raise TrainingError(f"{name} must not be negative, got {getattr(self, name)}.")
        if not self.learning_rate > 0:
            raise TrainingError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.resume is not None and not Path(self.resume).is_file():
            raise TrainingError(f"Checkpoint {self.resume} does not exist; pass a last.pt from an earlier run's checkpoint folder.")
        return self


@dataclass(frozen=True)
class TrainOption:
    """One field of :class:`TrainConfig` as an option of ``clearmark train`` and a field of the DAG form."""

    name: str
    default: Any  # as the command line and the form write it (e.g. "auto")
    value_type: Any  # the field's type
    spec: OptionSpec

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def in_form(self) -> bool:
        return self.spec.local_only is None


def train_options() -> Iterator[TrainOption]:
    """The options of ``clearmark train``, in :class:`TrainConfig`'s order."""
    types = get_type_hints(TrainConfig)
    for config_field in fields(TrainConfig):
        spec: OptionSpec = config_field.metadata["option"]
        default = config_field.default if spec.text_default is None else spec.text_default
        yield TrainOption(config_field.name, default, types[config_field.name], spec)


def cli_arguments(values: Mapping[str, Any]) -> list[str]:
    """``clearmark train`` arguments (after ``train``) for the options named in ``values``; None leaves one out."""
    arguments: list[str] = []
    for train_option in train_options():
        value = values.get(train_option.name)
        if value is not None:
            arguments += [train_option.flag, str(value)]
    return arguments


def scheduled_recipe(path: Path) -> dict[str, Any]:
    """The recipe of scheduled training runs (config/training.yaml): form values by option name."""
    import yaml

    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise TrainingError(f"Training recipe {path} is missing; restore config/training.yaml or set CLEARMARK_TRAINING_FILE.") from None
    except yaml.YAMLError as exc:
        raise TrainingError(f"Training recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(recipe, dict):
        raise TrainingError(f"Training recipe {path} must map option names to values, e.g. `epochs: 2`.")
    form = sorted(train_option.name for train_option in train_options() if train_option.in_form)
    unknown = sorted(set(recipe) - set(form))
    if unknown:
        raise TrainingError(f"Training recipe {path}: {', '.join(unknown)} is not an option of a scheduled run; use {', '.join(form)}.")
    return recipe


def config_from_cli(values: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from command-line values (text options converted); raises :class:`TrainingError`."""
    converted = {}
    for train_option in train_options():
        value = values[train_option.name]
        converted[train_option.name] = train_option.spec.text(value) if train_option.spec.text and value is not None else value
    return TrainConfig(**converted)
