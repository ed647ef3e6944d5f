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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.model.detector import PAD_MULTIPLE
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
    """RGB grid, one row per image: input | truth | prediction (probability as grey)."""
    import numpy as np
    from PIL import Image


    lines = []
    side = 256
    for _, image, mask in data.pairs(rows.head(count)):
        probability = detector.predict_proba(image[None])[0]
        panels = [image, np.repeat(mask[..., None] * 255, 3, axis=2), np.repeat(probability[..., None] * 255, 3, axis=2)]
        resized = [np.asarray(Image.fromarray(p.astype(np.uint8)).resize((side, side), Image.Resampling.NEAREST)) for p in panels]
        lines.append(np.concatenate(resized, axis=1))
    return np.concatenate(lines, axis=0)


def _loss_fn() -> Any:
    """Dice + BCE on logits: Dice for the thin, rare watermark pixels, BCE for calibration."""
    import segmentation_models_pytorch as smp
    import torch

    dice = smp.losses.DiceLoss(mode="binary", from_logits=True)
    bce = torch.nn.BCEWithLogitsLoss()
    return lambda logits, target: dice(logits, target) + bce(logits, target)


def _train_epoch(
    model: torch.nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    loss_fn: Any,
    device: torch.device,
    epoch: int,
    epochs: int,
    show_progress: bool,
) -> tuple[float, float, int]:
    """One pass over the training loader: (mean loss, pixel IoU of the batches, images seen)."""
    import torch

    from clearmark.progress import progress_bar

    model.train()
    use_amp = device.type == "cuda"
    seen, loss_sum, tp, fp, fn = 0, 0.0, 0, 0, 0
    bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not show_progress)
    for step, (images, masks) in enumerate(bar):
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp):
            logits = model(images)
            loss = loss_fn(logits.float(), masks)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"Loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}: training diverged. "
                "Lower --learning-rate (e.g. by 10x) and check the dataset's masks."
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        with torch.no_grad():
            predicted, truth = logits.detach() > 0, masks > 0.5
            tp += int((predicted & truth).sum())
            fp += int((predicted & ~truth).sum())
            fn += int((~predicted & truth).sum())
        seen += len(images)
        loss_sum += loss.item() * len(images)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)  # shown at the next redraw, not one per batch
    return loss_sum / max(1, seen), tp / max(1, tp + fp + fn), seen


def _start_from_detector(network: torch.nn.Module, config: DetectorConfig, source: str, settings: Settings) -> None:
    """Copy the weights of an existing detector (e.g. the champion) into ``network`` to fine-tune it."""
    from clearmark.model.loading import load_detector

    start = load_detector(source, settings, device="cpu")
    have = (start.config.architecture, start.config.encoder, start.config.decoder_channels)
    want = (config.architecture, config.encoder, config.decoder_channels)
    if have != want:
        raise TrainingError(
            f"--init-from {source} is a {have[0]} / {have[1]} / decoder {have[2]} network but this run builds "
            f"{want[0]} / {want[1]} / decoder {want[2]}; pass the same --architecture, --encoder and --decoder-channels."
        )
    network.load_state_dict(start.network.state_dict())


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


def train(settings: Settings, config: TrainConfig) -> dict[str, Any]:
    """Train, validate each epoch, keep the best checkpoint by validation IoU, log to MLflow.

    Returns ``{"run_id", "model_uri", "best_val_iou", "export_dir", ...}`` on rank 0
    (other ranks return ``{}``).
    """
    import mlflow
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from clearmark.model.calibrate import calibrate_detector
    from clearmark.data.catalog import load_training_data
    from clearmark.model.data import PairDataset, train_augmentations
    from clearmark.model.detector import Detector, build_network, load_detector_folder, save_detector
    from clearmark.model.evaluate import evaluate_pairs
    from clearmark.model.registry import MODEL_URI_TAG, check_mlflow, log_detector_model, use_tracking_server

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
    side = config.detect_side if config.detect_side is not None else training_scale(train_rows)
    detector_config = replace(config.detector_config(), detect_side=side or None)
    network = build_network(detector_config, config.encoder_weights)
    if config.init_from is not None:
        _start_from_detector(network, detector_config, config.init_from, settings)
    network = network.to(device)

    dataset = PairDataset(data, train_rows, train_augmentations(config.image_size, config.seed + world.rank))
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
    steps_per_epoch = max(1, len(loader))
    if config.scheduler == "onecycle":
        scheduler: Any = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    loss_fn = _loss_fn()

    start_epoch, best_iou, stale_epochs, run_id = 0, -1.0, 0, None
    if config.resume is not None:
        checkpoint = torch.load(config.resume, map_location=device, weights_only=False)
        if checkpoint["config"]["epochs"] != config.epochs or checkpoint["config"]["batch_size"] != config.batch_size:
            raise TrainingError(
                f"{config.resume} was written with --epochs {checkpoint['config']['epochs']} --batch-size {checkpoint['config']['batch_size']}; "
                "resume with the same values (the learning-rate schedule depends on them)."
            )
        network.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, best_iou, stale_epochs, run_id = checkpoint["epoch"] + 1, checkpoint["best_iou"], checkpoint["stale_epochs"], checkpoint["run_id"]

    checkpoint_dir: Path | None = None
    if world.is_main:
        use_tracking_server(settings)
        mlflow.set_experiment(settings.experiment)
        run = mlflow.start_run(run_id=run_id, run_name=config.run_name)
        run_id = run.info.run_id
        checkpoint_dir = Path(config.resume).parent if config.resume else Path(config.checkpoint_dir or settings.home / "checkpoints" / run_id)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if config.resume is None:
            params = {k: v for k, v in asdict(config).items() if k != "resume"}
            mlflow.log_params({**params, "dataset": data.dataset, "dataset_version": data.version, "train_images": len(train_rows), "val_images": len(val_rows)})
            mlflow.set_tags(
                {
                    "dataset": data.dataset,
                    "dataset_version": data.version,
                    "manifest_sha256": data.manifest_sha256,
                    "data_location": data.location,
                    "checkpoint_dir": str(checkpoint_dir),
                    **{f"system.{k}": v for k, v in system_info(device, world.world_size).items()},
                }
            )
            mlflow.log_dict(json.loads(json.dumps(asdict(config), default=str)), "config/train_config.json")
        print(f"MLflow run {run_id}; checkpoints in {checkpoint_dir}", flush=True)

    val_names = ("iou", "dice", "precision", "recall", "accuracy")
    run_started = time.monotonic()
    try:
        for epoch in range(start_epoch, config.epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            started = time.monotonic()
            train_loss, train_iou, seen = _train_epoch(model, loader, optimizer, scheduler, scaler, loss_fn, device, epoch, config.epochs, world.is_main)
            elapsed = time.monotonic() - started

            stop = torch.zeros(1, device=device)
            if world.is_main:
                assert checkpoint_dir is not None and run_id is not None
                live = Detector(network, detector_config, version="training", device=str(device))
                val = evaluate_pairs(live, data.pairs(val_rows), progress=False)
                epoch_metrics = {
                    "train_loss": train_loss,
                    "train_iou": train_iou,
                    **{f"val_{k}": val[k] for k in val_names},
                    "learning_rate": optimizer.param_groups[0]["lr"],
                    "images_per_second": seen * world.world_size / max(elapsed, 1e-9),
                    "elapsed_seconds": time.monotonic() - run_started,  # since this process started (or resumed)
                }
                mlflow.log_metrics(epoch_metrics, step=epoch + 1)
                print(json.dumps({"epoch": epoch + 1, **{k: round(v, 5) for k, v in epoch_metrics.items()}}), flush=True)
                if val["iou"] > best_iou + 1e-4:
                    best_iou, stale_epochs = val["iou"], 0
                    best_metrics = {**{f"val_{k}": val[k] for k in val_names}, "epoch": epoch + 1}
                    save_detector(network, detector_config, checkpoint_dir / "best", metrics=best_metrics, data_version=data.version)
                else:
                    stale_epochs += 1
                _save_checkpoint(
                    checkpoint_dir / "last.pt",
                    {
                        "model": network.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "epoch": epoch,
                        "best_iou": best_iou,
                        "stale_epochs": stale_epochs,
                        "run_id": run_id,
                        "config": asdict(config),
                    },
                )
                if stale_epochs >= config.patience:
                    print(f"Early stop: no better validation IoU for {stale_epochs} epochs.", flush=True)
                    stop += 1
                elif config.max_minutes is not None and epoch_metrics["elapsed_seconds"] >= config.max_minutes * 60:
                    print(f"Time budget of {config.max_minutes} min reached after epoch {epoch + 1}.", flush=True)
                    stop += 1
            if world.world_size > 1:
                dist.broadcast(stop, src=0)  # every rank stops together
            if stop.item():
                break

        if not world.is_main:
            return {}
        assert checkpoint_dir is not None
        best_dir = checkpoint_dir / "best"
        calibration = calibrate_detector(best_dir, data, progress=False)
        mlflow.log_metrics(
            {
                "val_iou_before_calibration": calibration["val_iou_before"],
                "batchnorm_images": calibration["batchnorm_images"],
                "val_iou_calibrated": calibration["iou"],
                "calibrated_threshold": calibration["threshold"],
            }
        )
        best = load_detector_folder(best_dir, device=str(device))
        mlflow.log_image(sample_grid(best, data, val_rows), "samples/predictions.png")
        model_uri = log_detector_model(best_dir)
        mlflow.set_tags({"best_val_iou": f"{best_iou:.4f}", MODEL_URI_TAG: model_uri})
        mlflow.end_run()
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
    return {"run_id": run_id, "model_uri": model_uri, "best_val_iou": best_iou, "export_dir": str(best_dir), "dataset_version": data.version}

