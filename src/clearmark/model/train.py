"""Training loop of the detector: seeded, resumable, early-stopped, DDP-ready, logged to MLflow.

Run it as ``clearmark train`` (one process) or ``torchrun --nproc-per-node N -m clearmark train``
(DistributedDataParallel; only rank 0 talks to MLflow and writes checkpoints).  Checkpoints
go to ``settings.home/checkpoints/<run id>`` unless ``checkpoint_dir`` says otherwise:
never into the repository.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.model.detector import IMAGENET_MEAN, IMAGENET_STD, PAD_MULTIPLE
from clearmark.model.train_config import TrainConfig, TrainingError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from clearmark.data.dataset import LocalDataset
    from clearmark.model.detector import Detector, DetectorConfig
    from clearmark.settings import Settings

SAMPLE_GRID_IMAGES = 4


@dataclass
class Distributed:
    """Where this process sits in a torchrun job (world of one without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed() -> Distributed:
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    dist_info = Distributed(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    if torch.cuda.is_available():
        torch.cuda.set_device(dist_info.local_rank)
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist_info


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and ask torch for deterministic kernels where they exist."""
    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def _seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own (reproducible) augmentation stream."""
    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset.transform.set_random_seed(worker_seed)


def system_info(device: torch.device, world_size: int) -> dict[str, str]:
    """What ran the training, for the run's tags."""
    import segmentation_models_pytorch as smp
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "smp": smp.__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "none",
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "world_size": str(world_size),
    }


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or "out of memory" in str(exc) or "can't allocate memory" in str(exc)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file, so an interrupted write keeps the previous one."""
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def sample_grid(detector: Detector, data: LocalDataset, rows: Any, count: int = SAMPLE_GRID_IMAGES) -> np.ndarray:
    """RGB grid, one row per image: input | truth | prediction (probability as grey) [| predicted alpha | predicted W]."""
    import numpy as np
    from PIL import Image

    lines = []
    side = 256
    for _, image, mask in data.pairs(rows.head(count)):
        maps = detector.predict_maps(image[None])[0]
        matte = maps.shape[-1] > 1
        greys = [mask, maps[..., 0], *([maps[..., 1]] if matte else [])]
        panels = [image, *(np.repeat(grey[..., None] * 255, 3, axis=2) for grey in greys), *([maps[..., 2:5] * 255] if matte else [])]
        resized = [np.asarray(Image.fromarray(p.astype(np.uint8)).resize((side, side), Image.Resampling.NEAREST)) for p in panels]
        lines.append(np.concatenate(resized, axis=1))
    return np.concatenate(lines, axis=0)


# Predicted alpha is clamped below this in the reconstruction (J - a W) / (1 - a), so its
# gradient stays finite; pixels more opaque than this are left to the inpainter anyway.
RECONSTRUCTION_MAX_ALPHA = 0.95
IMAGENET_MEAN_STD = (IMAGENET_MEAN, IMAGENET_STD)


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` weighted by ``weight`` (broadcast over channels); 0 where the weight is all 0."""
    weight = weight.expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1e-6)


def loss_terms(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The loss terms of a batch whose targets are known, unweighted.

    ``footprint``: Dice + BCE on channel 0 (Dice for the thin, rare watermark pixels, BCE for
    calibration).  A matte network (5 channels) adds, over the pairs that have the target:
    ``alpha``, L1 on alpha, the mean inside the mask and the mean outside it weighing alike; ``colour``, L1 on W weighted by the true alpha
    (W means nothing where nothing was blended); ``reconstruction``, L1 of the unblended
    ``(J - a W) / (1 - a)`` against the clean image inside the mask where the mark is not
    opaque (the true alpha where known, else the predicted one, below
    :data:`RECONSTRUCTION_MAX_ALPHA`), so pairs with a clean image but no matte train it too.
    """
    import segmentation_models_pytorch as smp
    import torch

    mask = batch["mask"]
    footprint = logits[:, :1]
    dice = smp.losses.DiceLoss(mode="binary", from_logits=True)
    terms = {"footprint": dice(footprint, mask) + torch.nn.functional.binary_cross_entropy_with_logits(footprint, mask)}
    if logits.shape[1] == 1:
        return terms
    alpha, colour = torch.sigmoid(logits[:, 1:2]), torch.sigmoid(logits[:, 2:5])
    has_matte = batch["has_matte"].float().view(-1, 1, 1, 1)
    has_clean = batch["has_clean"].float().view(-1, 1, 1, 1)
    # Inside and outside the mark weigh alike: averaged over every pixel, a mark covering a few
    # per cent of the image let "alpha 0 everywhere" cost almost nothing (matte stage 1 learnt that).
    alpha_error, known = (alpha - batch["alpha"]).abs(), has_matte.expand_as(alpha)
    terms["alpha"] = (_masked_mean(alpha_error, known * mask) + _masked_mean(alpha_error, known * (1 - mask))) / 2
    terms["colour"] = _masked_mean((colour - batch["colour"]).abs(), batch["alpha"] * has_matte)
    mean, std = (torch.tensor(v, device=logits.device).view(1, 3, 1, 1) for v in IMAGENET_MEAN_STD)
    watermarked = batch["image"] * std + mean
    clamped = alpha.clamp(max=RECONSTRUCTION_MAX_ALPHA)
    unblended = (watermarked - clamped * colour) / (1 - clamped)
    reference_alpha = torch.where(has_matte > 0, batch["alpha"], alpha.detach())
    region = mask * has_clean * (reference_alpha < RECONSTRUCTION_MAX_ALPHA)
    terms["reconstruction"] = _masked_mean((unblended - batch["clean"]).abs(), region)
    return terms


def _loss_fn(config: TrainConfig) -> Any:
    """``(logits, batch) -> (weighted loss, its terms)`` with the weights of ``config``."""
    weights = {"footprint": 1.0, "alpha": config.alpha_loss_weight, "colour": config.colour_loss_weight, "reconstruction": config.reconstruction_loss_weight}

    def loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = loss_terms(logits, batch)
        return sum(weights[name] * term for name, term in terms.items()), terms

    return loss


@dataclass
class _Progress:
    """Where a run stands; every checkpoint saves it, so a resumed run goes on from there."""

    next_epoch: int = 0
    best_score: float = -math.inf  # validation_score of the best checkpoint
    best_iou: float = -1.0  # its validation IoU
    stale_epochs: int = 0
    run_id: str | None = None


@dataclass
class _EpochLoop:
    """What each training epoch works with, built once per run by :func:`_build_loop`."""

    network: torch.nn.Module  # the bare network: validated and saved
    model: torch.nn.Module  # what the steps run: the network, or its DistributedDataParallel wrapper
    loader: Any
    sampler: Any  # a DistributedSampler under torchrun, else None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    loss_fn: Any
    device: torch.device

    def train_epoch(self, epoch: int, epochs: int, show_progress: bool) -> tuple[dict[str, float], int]:
        """One pass over the training loader: ({train_loss, train_iou (of the batches), train_loss_<term>}, images seen)."""
        import torch

        from clearmark.progress import progress_bar

        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.model.train()
        use_amp = self.device.type == "cuda"
        seen, loss_sum, tp, fp, fn = 0, 0.0, 0, 0, 0
        term_sums: dict[str, float] = {}
        bar = progress_bar(self.loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not show_progress)
        for step, batch in enumerate(bar):
            batch = {name: tensor.to(self.device, non_blocking=True) for name, tensor in batch.items()}
            images, masks = batch["image"], batch["mask"]
            with torch.autocast(self.device.type, enabled=use_amp):
                logits = self.model(images)
                loss, terms = self.loss_fn(logits.float(), batch)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"Loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}: training diverged. "
                    "Lower --learning-rate (e.g. by 10x) and check the dataset's masks."
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            with torch.no_grad():
                predicted, truth = logits.detach()[:, :1] > 0, masks > 0.5
                tp += int((predicted & truth).sum())
                fp += int((predicted & ~truth).sum())
                fn += int((~predicted & truth).sum())
            seen += len(images)
            loss_sum += loss.item() * len(images)
            for name, term in terms.items():
                term_sums[name] = term_sums.get(name, 0.0) + term.item() * len(images)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)  # shown at the next redraw, not one per batch
        metrics = {"train_loss": loss_sum / max(1, seen), "train_iou": tp / max(1, tp + fp + fn)}
        return metrics | {f"train_loss_{name}": total / max(1, seen) for name, total in term_sums.items()}, seen

    def checkpoint(self, epoch: int, progress: _Progress, config: TrainConfig) -> dict[str, Any]:
        """Everything :meth:`resume` needs to go on after ``epoch``."""
        return {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "best_score": progress.best_score,
            "best_iou": progress.best_iou,
            "stale_epochs": progress.stale_epochs,
            "run_id": progress.run_id,
            "config": asdict(config),
        }

    def resume(self, path: Path, config: TrainConfig) -> _Progress:
        """Load a checkpoint written by :meth:`checkpoint`; the schedule must match this run's."""
        import torch

        checkpoint = torch.load(path, map_location=self.device, weights_only=False)
        if checkpoint["config"]["epochs"] != config.epochs or checkpoint["config"]["batch_size"] != config.batch_size:
            raise TrainingError(
                f"{path} was written with --epochs {checkpoint['config']['epochs']} --batch-size {checkpoint['config']['batch_size']}; "
                "resume with the same values (the learning-rate schedule depends on them)."
            )
        self.network.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        return _Progress(checkpoint["epoch"] + 1, checkpoint["best_score"], checkpoint["best_iou"], checkpoint["stale_epochs"], checkpoint["run_id"])


def _build_loop(config: TrainConfig, dataset: Any, network: torch.nn.Module, world: Distributed, device: torch.device) -> _EpochLoop:
    """Loader, optimiser, learning-rate schedule and mixed-precision scaler for ``network`` (already on ``device``)."""
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(dataset, num_replicas=world.world_size, rank=world.rank, seed=config.seed) if world.world_size > 1 else None
    workers = config.num_workers if config.num_workers is not None else (4 if device.type == "cuda" else 0)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(config.seed),
        drop_last=len(dataset) > config.batch_size,  # no lone-sample batch (BatchNorm needs two)
        pin_memory=device.type == "cuda",
    )
    model: torch.nn.Module = network
    if world.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(network, device_ids=[world.local_rank] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    total_steps = config.epochs * max(1, len(loader))
    if config.scheduler == "onecycle":
        scheduler: Any = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=total_steps)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    return _EpochLoop(network, model, loader, sampler, optimizer, scheduler, scaler, _loss_fn(config), device)


def _start_from_detector(network: torch.nn.Module, config: DetectorConfig, start: Detector, source: str) -> None:
    """Copy the weights of ``start``, an existing detector (e.g. the champion) loaded from ``source``, into ``network`` to fine-tune it.

    A detector with other outputs (a mask detector seeding a matte network) gives every
    tensor but the output head's; the head is initialised afresh, except that its footprint
    channel (channel 0 in both kinds) keeps the source's weights.
    """
    have = (start.config.architecture, start.config.encoder, start.config.decoder_channels)
    want = (config.architecture, config.encoder, config.decoder_channels)
    if have != want:
        raise TrainingError(
            f"--init-from {source} is a {have[0]} / {have[1]} / decoder {have[2]} network but this run builds "
            f"{want[0]} / {want[1]} / decoder {want[2]}; pass the same --architecture, --encoder and --decoder-channels."
        )
    own = network.state_dict()
    reshaped = []
    for name, tensor in start.network.state_dict().items():
        if own[name].shape != tensor.shape:  # output channels differ: copy the ones both have
            channels = min(len(tensor), len(own[name]))
            own[name][:channels] = tensor[:channels]
            reshaped.append(name)
        else:
            own[name] = tensor
    network.load_state_dict(own)
    if reshaped:
        print(
            f"--init-from {source}: a {start.config.outputs} detector into a {config.outputs} network: loaded every tensor but "
            f"{', '.join(reshaped)}, which are initialised afresh but for the footprint channel.",
            flush=True,
        )


def training_scale(rows: pd.DataFrame) -> int | None:
    """Median long side of the training images, rounded up to a multiple of 32 (None: no sizes).

    Training crops keep the native resolution, so this is the scale the network learnt
    watermarks at; removal downscales larger photos to it.
    """
    import numpy as np

    if rows.empty or not {"width", "height"} <= set(rows.columns):
        return None
    side = float(np.median(np.maximum(rows["width"].to_numpy(), rows["height"].to_numpy())))
    return math.ceil(side / PAD_MULTIPLE) * PAD_MULTIPLE


VAL_METRICS = ("iou", "dice", "precision", "recall", "accuracy")


def validation_score(val: dict[str, Any]) -> float:
    """What picks the checkpoint: validation IoU, less the alpha MAE inside the mask where the matte is measured."""
    return float(val["iou"] - val.get("alpha_mae", 0.0))


@dataclass
class _Run:
    """One training run: what it trains on and with, and where it stands; shared by its steps."""

    config: TrainConfig
    data: LocalDataset
    train_rows: Any
    val_rows: Any
    detector_config: DetectorConfig
    world: Distributed
    loop: _EpochLoop
    progress: _Progress
    checkpoint_dir: Path | None = None  # set on rank 0 when the MLflow run starts
    started: float = field(default_factory=time.monotonic)  # when this process started (or resumed) the run


def _start_run(settings: Settings, run: _Run) -> None:
    """Rank 0: start (or, resuming, reopen) the MLflow run, record what it trains on, make the checkpoint folder."""
    import mlflow

    from clearmark.model.registry import use_tracking_server

    config, data = run.config, run.data
    use_tracking_server(settings)
    mlflow.set_experiment(settings.experiment)
    run.progress.run_id = run_id = mlflow.start_run(run_id=run.progress.run_id, run_name=config.run_name).info.run_id
    run.checkpoint_dir = checkpoint_dir = Path(config.resume).parent if config.resume else Path(config.checkpoint_dir or settings.home / "checkpoints" / run_id)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if config.resume is None:
        params = {k: v for k, v in asdict(config).items() if k != "resume"}
        mlflow.log_params({**params, "dataset": data.dataset, "dataset_version": data.version, "train_images": len(run.train_rows), "val_images": len(run.val_rows)})
        mlflow.set_tags(
            {
                "dataset": data.dataset,
                "dataset_version": data.version,
                "manifest_sha256": data.manifest_sha256,
                "data_location": data.location,
                "checkpoint_dir": str(checkpoint_dir),
                **{f"system.{k}": v for k, v in system_info(run.loop.device, run.world.world_size).items()},
            }
        )
        mlflow.log_dict(json.loads(json.dumps(asdict(config), default=str)), "config/train_config.json")
    print(f"MLflow run {run_id}; checkpoints in {checkpoint_dir}", flush=True)


def _end_of_epoch(run: _Run, epoch: int, trained: dict[str, float], images_per_second: float) -> bool:
    """Rank 0 after each epoch: validate, log, keep the best detector and a checkpoint; True to stop."""
    import mlflow

    from clearmark.model.detector import Detector, save_detector
    from clearmark.model.evaluate import evaluate_pairs

    config, loop, progress, checkpoint_dir = run.config, run.loop, run.progress, run.checkpoint_dir
    assert checkpoint_dir is not None
    live = Detector(loop.network, run.detector_config, version="training", device=str(loop.device))
    val = evaluate_pairs(live, run.data.matte_pairs(run.val_rows), progress=False)
    val_metrics = {f"val_{k}": val[k] for k in (*VAL_METRICS, "alpha_mae") if k in val}
    val_metrics["val_score"] = score = validation_score(val)
    metrics = {
        **trained,
        **val_metrics,
        "learning_rate": loop.optimizer.param_groups[0]["lr"],
        "images_per_second": images_per_second,
        "elapsed_seconds": time.monotonic() - run.started,
    }
    mlflow.log_metrics(metrics, step=epoch + 1)
    print(json.dumps({"epoch": epoch + 1, **{k: round(v, 5) for k, v in metrics.items()}}), flush=True)
    if score > progress.best_score + 1e-4:
        progress.best_score, progress.best_iou, progress.stale_epochs = score, val["iou"], 0
        save_detector(loop.network, run.detector_config, checkpoint_dir / "best", metrics={**val_metrics, "epoch": epoch + 1}, data_version=run.data.version)
    else:
        progress.stale_epochs += 1
    _save_checkpoint(checkpoint_dir / "last.pt", loop.checkpoint(epoch, progress, config))
    if progress.stale_epochs >= config.patience:
        print(f"Early stop: no better validation score for {progress.stale_epochs} epochs.", flush=True)
        return True
    if config.max_minutes is not None and metrics["elapsed_seconds"] >= config.max_minutes * 60:
        print(f"Time budget of {config.max_minutes} min reached after epoch {epoch + 1}.", flush=True)
        return True
    return False


def _finish_run(run: _Run, best_dir: Path) -> str:
    """Rank 0: calibrate the best detector, log it with sample predictions, end the MLflow run; returns the model URI."""
    import mlflow

    from clearmark.model.calibrate import calibrate_detector
    from clearmark.model.detector import load_detector_folder
    from clearmark.model.registry import MODEL_URI_TAG, log_detector_model

    calibration = calibrate_detector(best_dir, run.data, progress=False)
    mlflow.log_metrics(
        {
            "val_iou_before_calibration": calibration["val_iou_before"],
            "batchnorm_images": calibration["batchnorm_images"],
            "val_iou_calibrated": calibration["iou"],
            "calibrated_threshold": calibration["threshold"],
        }
    )
    best = load_detector_folder(best_dir, device=str(run.loop.device))
    mlflow.log_image(sample_grid(best, run.data, run.val_rows), "samples/predictions.png")
    model_uri = log_detector_model(best_dir)
    mlflow.set_tags({"best_val_iou": f"{run.progress.best_iou:.4f}", MODEL_URI_TAG: model_uri})
    mlflow.end_run()
    return model_uri


def train(settings: Settings, config: TrainConfig) -> dict[str, Any]:
    """Train, validate each epoch, keep the best checkpoint by :func:`validation_score`, log to MLflow.

    Returns ``{"run_id", "model_uri", "best_val_iou", "export_dir", ...}`` on rank 0
    (other ranks return ``{}``).
    """
    import mlflow
    import torch
    import torch.distributed as dist

    from clearmark.data.catalog import load_training_data
    from clearmark.model.data import PairDataset, train_augmentations
    from clearmark.model.detector import build_network
    from clearmark.model.loading import fixed_source, load_detector
    from clearmark.model.registry import check_mlflow

    config.validate()
    world = _setup_distributed()
    seed_everything(config.seed + world.rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(f"cuda:{world.local_rank}" if torch.cuda.is_available() else "cpu")
    if world.is_main:
        check_mlflow(settings)  # before any download: an unreachable server fails in seconds

    data = load_training_data(settings, config.dataset, config.dataset_version, config.data_dir)
    train_rows, val_rows = data.split("train"), data.split("val").head(config.max_val_images)
    start = None
    if config.init_from is not None:  # pinned: the run records the version it fine-tuned
        config = replace(config, init_from=fixed_source(config.init_from, settings))
        start = load_detector(config.init_from, settings, device="cpu")
    config = config.with_network_of(start.config if start is not None else None)
    if config.detect_side is not None:
        side = config.detect_side or None  # 0: native resolution
    else:  # auto: the scale the start detector serves at, else the one these crops show marks at
        side = start.config.detect_side if start is not None else training_scale(train_rows)
    detector_config = replace(config.detector_config(), detect_side=side)
    network = build_network(detector_config, config.encoder_weights)
    if start is not None:
        _start_from_detector(network, detector_config, start, config.init_from)
    dataset = PairDataset(data, train_rows, train_augmentations(config.image_size, config.seed + world.rank), matte=config.outputs == "matte")
    loop = _build_loop(config, dataset, network.to(device), world, device)
    progress = loop.resume(config.resume, config) if config.resume is not None else _Progress()
    run = _Run(config, data, train_rows, val_rows, detector_config, world, loop, progress)
    if world.is_main:
        _start_run(settings, run)

    try:
        for epoch in range(progress.next_epoch, config.epochs):
            started = time.monotonic()
            trained, seen = loop.train_epoch(epoch, config.epochs, world.is_main)
            images_per_second = seen * world.world_size / max(time.monotonic() - started, 1e-9)
            stop = torch.zeros(1, device=device)
            if world.is_main and _end_of_epoch(run, epoch, trained, images_per_second):
                stop += 1
            if world.world_size > 1:
                dist.broadcast(stop, src=0)  # every rank stops together
            if stop.item():
                break
        if not world.is_main:
            return {}
        assert run.checkpoint_dir is not None
        best_dir = run.checkpoint_dir / "best"
        model_uri = _finish_run(run, best_dir)
    except BaseException as exc:
        if world.is_main and mlflow.active_run() is not None:
            mlflow.end_run("FAILED")
        if isinstance(exc, RuntimeError | MemoryError) and not isinstance(exc, TrainingError) and _is_out_of_memory(exc):
            raise TrainingError(
                f"Out of memory with batch size {config.batch_size} at {config.image_size} px on {device}: "
                "retry with a smaller --batch-size or --image-size."
            ) from exc
        raise
    finally:
        if world.world_size > 1:
            dist.destroy_process_group()
    return {"run_id": progress.run_id, "model_uri": model_uri, "best_val_iou": progress.best_iou, "export_dir": str(best_dir), "dataset_version": data.version}
