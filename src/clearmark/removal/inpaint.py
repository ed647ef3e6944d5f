"""Inpainters: fill the watermark pixels of an image, interchangeable by name.

Every inpainter takes an ``H x W x 3`` uint8 RGB image and an ``H x W`` uint8 mask
(255 = watermark; any non-zero value counts as masked) and returns a new image of the
same size in which only masked pixels may differ.  Inpainters are chosen by name
from a registry, like smp's encoders::

    inpainter = get_inpainter("telea", settings)            # OpenCV, CPU, default
    inpainter = get_inpainter("ns", settings, radius=5)     # OpenCV Navier-Stokes (scale=1.0: full resolution)
    inpainter = get_inpainter("diffusers", settings)        # Stable Diffusion inpainting
    cleaned = inpainter.inpaint(rgb, mask)

New inpainters (e.g. LaMa) register a factory with :func:`register_inpainter`.

This module is reachable from the CLI and DAG files, so numpy, OpenCV, torch and
diffusers are imported inside functions.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from clearmark.settings import Settings

if TYPE_CHECKING:
    import numpy as np

SUGGESTED_DIFFUSERS_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
SIZE_MULTIPLE = 8  # Stable Diffusion's VAE downsamples by 8: pipeline sizes must be multiples of it


@runtime_checkable
class Inpainter(Protocol):
    """Fills masked pixels; implementations may add ``inpaint_batch(rgbs, masks)``.

    ``thread_safe``: ``inpaint`` may run in several threads at once (the removal pipeline
    then gives it one thread per core; otherwise one thread).
    """

    name: str
    thread_safe: bool

    def inpaint(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``rgb`` H x W x 3 uint8, ``mask`` H x W uint8 (0/255) -> H x W x 3 uint8.

        Pixels where ``mask`` is 0 are returned unchanged.
        """
        ...


class MatteDetection(Protocol):
    """What a restorer reads of a detection (``clearmark.model.inference.Detection`` is one).

    ``mask`` H x W uint8 (0/255): the footprint, the only pixels a restorer may change;
    ``alpha`` H x W float32 0..1 and ``colour`` H x W x 3 float32 0..1 (the mark's ``W``)
    are ``None`` for a mask-only detector.
    """

    mask: np.ndarray
    alpha: np.ndarray | None
    colour: np.ndarray | None


@dataclass(frozen=True)
class MaskOnly:
    """A detection that is only a mask (what :meth:`Inpainter.inpaint` callers have)."""

    mask: np.ndarray
    alpha: None = None
    colour: None = None


@dataclass(frozen=True)
class RestoreStats:
    """How one image's footprint (mask pixels) was restored: pixel counts."""

    footprint: int
    unblended: int  # recovered by inverting the blend
    inpainted: int  # filled from the surroundings

    def share(self, pixels: int) -> float:
        return round(pixels / self.footprint, 6) if self.footprint else 0.0


@runtime_checkable
class Restorer(Protocol):
    """Cleans one image from its detection: what the removal pipeline calls for every inpainter.

    ``uses_matte``: whether ``restore`` reads the detection's ``alpha`` and ``colour``
    (the pipeline then hands them over in the image's stored orientation).
    """

    name: str
    thread_safe: bool
    uses_matte: bool

    def restore(self, rgb: np.ndarray, detection: MatteDetection) -> tuple[np.ndarray, RestoreStats]:
        """``rgb`` H x W x 3 uint8 -> (cleaned H x W x 3 uint8, stats); only mask pixels may change."""
        ...


@dataclass(frozen=True)
class InpaintingRestorer:
    """A plain inpainter as a :class:`Restorer`: the whole footprint is inpainted."""

    inpainter: Inpainter
    uses_matte: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.inpainter.name

    @property
    def thread_safe(self) -> bool:
        return self.inpainter.thread_safe

    def restore(self, rgb: np.ndarray, detection: MatteDetection) -> tuple[np.ndarray, RestoreStats]:
        import numpy as np

        footprint = int(np.count_nonzero(detection.mask))
        return self.inpainter.inpaint(rgb, detection.mask), RestoreStats(footprint, 0, footprint)


def as_restorer(inpainter: Inpainter | Restorer) -> Restorer:
    """``inpainter`` itself if it restores from a detection, else adapted (:class:`InpaintingRestorer`)."""
    return inpainter if isinstance(inpainter, Restorer) else InpaintingRestorer(inpainter)


class UnknownInpainterError(ValueError):
    """No inpainter is registered under the requested name."""


class DiffusersModelNotFoundError(FileNotFoundError):
    """The ``diffusers`` inpainter has no local model to load; the message says what to set."""


InpainterFactory = Callable[..., Inpainter]
_REGISTRY: dict[str, InpainterFactory] = {}


def register_inpainter(name: str) -> Callable[[InpainterFactory], InpainterFactory]:
    """Register ``factory(settings, **options) -> Inpainter`` under ``name`` (decorator)."""

    def decorator(factory: InpainterFactory) -> InpainterFactory:
        if name in _REGISTRY:
            raise ValueError(f"An inpainter named {name!r} is already registered; pick another name.")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_inpainters() -> list[str]:
    """Names accepted by :func:`get_inpainter`, sorted."""
    return sorted(_REGISTRY)


def get_inpainter(name: str, settings: Settings, **options: Any) -> Inpainter:
    """Build the inpainter registered as ``name``.

    ``options`` go to its factory (``radius`` for the OpenCV ones; ``num_inference_steps``,
    ``seed``, ``prompt``... for ``diffusers``).  Models are loaded here, so a missing model
    fails before any image is processed.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        raise UnknownInpainterError(
            f"Unknown inpainter {name!r}. Available inpainters: {', '.join(available_inpainters())} "
            f"(set CLEARMARK_INPAINTER or pass --inpainter with one of them)."
        )
    return factory(settings, **options)


def inpaint_images(inpainter: Inpainter, rgbs: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Inpaint several images, through ``inpaint_batch`` when the inpainter batches."""
    if len(rgbs) != len(masks):
        raise ValueError(f"Got {len(rgbs)} images but {len(masks)} masks; pass one mask per image.")
    batch = getattr(inpainter, "inpaint_batch", None)
    if batch is not None:
        return batch(list(rgbs), list(masks))
    return [inpainter.inpaint(rgb, mask) for rgb, mask in zip(rgbs, masks, strict=True)]


def masked_pixels(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Check the inpainting contract and return the mask as booleans (True = fill).

    Raises ``ValueError`` that says what was expected when shapes or dtypes are wrong.
    """
    import numpy as np

    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(
            f"Inpainters take an H x W x 3 uint8 RGB array, got {_describe(rgb)}; "
            "convert with PIL.Image.convert('RGB') and numpy.asarray first."
        )
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.shape != rgb.shape[:2]:
        raise ValueError(
            f"The mask must be an H x W uint8 array (0 = keep, 255 = watermark) of the image's size "
            f"{rgb.shape[0]} x {rgb.shape[1]}, got {_describe(mask)}."
        )
    return mask > 0


def mask_box(fill: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` (end-exclusive) bounding box of True pixels, or None."""
    import numpy as np

    rows = np.flatnonzero(fill.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(fill.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def box_window(box: tuple[int, int, int, int], margin: int) -> tuple[slice, slice]:
    """The rows and columns of ``box`` (:func:`mask_box`) grown by ``margin`` px, as an index
    (its far ends are clipped by slicing itself)."""
    top, bottom, left, right = box
    return slice(max(0, top - margin), bottom + margin), slice(max(0, left - margin), right + margin)


def _describe(array: object) -> str:
    """Short description of a would-be array for error messages."""
    shape = getattr(array, "shape", None)
    dtype = getattr(array, "dtype", None)
    return f"{type(array).__name__} shape={shape} dtype={dtype}" if shape is not None else type(array).__name__


# --- OpenCV ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenCVInpainter:
    """``cv2.inpaint``: fast-marching (Telea 2004) or Navier-Stokes; CPU, milliseconds per image.

    ``scale`` < 1 fills a downscaled copy of the region and upsamples the fill into the
    hole.  These fills are smooth, so the fill loses almost nothing, and ``radius`` then
    reaches ``radius / scale`` full-resolution pixels of context for a fraction of the work
    (cost grows with the hole's pixel count times ``radius``²).
    """

    name: str
    method: Literal["telea", "ns"]
    thread_safe: ClassVar[bool] = True  # cv2.inpaint keeps no state and releases the GIL
    radius: float = 3.0  # neighbourhood (pixels at the working scale) each filled pixel is estimated from
    scale: float = 1.0  # resolution the hole is filled at, as a fraction of the image's

    def __post_init__(self) -> None:
        if self.radius <= 0:
            raise ValueError(f"The inpainting radius must be positive, got {self.radius}.")
        if not 0 < self.scale <= 1:
            raise ValueError(f"The inpainting scale must be in (0, 1], got {self.scale}.")

    def inpaint(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Fill the masked pixels from their surroundings; other pixels are kept as they are."""
        import cv2
        import numpy as np

        fill = masked_pixels(rgb, mask)
        result = rgb.copy()
        box = mask_box(fill)
        if box is None:
            return result
        # Both methods only read known pixels within ``radius`` of the hole: working on the
        # mask's box plus that margin gives the same pixels, much faster on large photos.
        window = box_window(box, math.ceil(self.radius / self.scale) + 2)
        hole = fill[window]
        flag = cv2.INPAINT_TELEA if self.method == "telea" else cv2.INPAINT_NS
        patch = np.ascontiguousarray(rgb[window])
        height, width = hole.shape
        small = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
        if small == (width, height):
            filled = cv2.inpaint(patch, hole.astype(np.uint8) * 255, self.radius, flag)
        else:
            # A small pixel is a hole if any pixel under it is: no watermark colour is averaged
            # into the known pixels the fill is estimated from.
            small_hole = (cv2.resize(hole.astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8) * 255
            small_filled = cv2.inpaint(cv2.resize(patch, small, interpolation=cv2.INTER_AREA), small_hole, self.radius, flag)
            filled = cv2.resize(small_filled, (width, height), interpolation=cv2.INTER_LINEAR)
        result[window][hole] = filled[hole]
        return result


# Half resolution by default: on the benchmark's held-out photos (512 and 1,024 px) the
# fill from predicted masks scored higher PSNR and SSIM inside the watermarks than at full
# resolution (the wider context helps where the mask is imperfect), at 2.6x less work.
OPENCV_SCALE = 0.5


@register_inpainter("telea")
def _telea(settings: Settings, radius: float = 3.0, scale: float = OPENCV_SCALE) -> Inpainter:
    """OpenCV fast-marching inpainting (the default)."""
    return OpenCVInpainter(name="telea", method="telea", radius=radius, scale=scale)


@register_inpainter("ns")
def _navier_stokes(settings: Settings, radius: float = 3.0, scale: float = OPENCV_SCALE) -> Inpainter:
    """OpenCV Navier-Stokes inpainting."""
    return OpenCVInpainter(name="ns", method="ns", radius=radius, scale=scale)


# --- Stable Diffusion (diffusers) -------------------------------------------------------

_PIPELINE_LOCK = threading.Lock()  # loading and scheduler state are not thread-safe


def resolve_diffusers_model(settings: Settings) -> Path:
    """Local folder of the configured inpainting pipeline; never downloads.

    ``settings.diffusers_model_dir`` is either a diffusers model folder (with
    ``model_index.json``) or a Hugging Face repo id that is already in the local cache.
    """
    configured = settings.diffusers_model_dir
    if configured is not None:
        folder = Path(configured).expanduser()
        if folder.is_dir():
            if not (folder / "model_index.json").is_file():
                raise DiffusersModelNotFoundError(
                    f"{folder} is not a diffusers pipeline folder (it has no model_index.json). "
                    f"Point CLEARMARK_DIFFUSERS_MODEL_DIR at the folder that `hf download` or "
                    f"`pipeline.save_pretrained` wrote."
                )
            return folder
        cached = _cached_hub_snapshot(str(configured))
        if cached is not None:
            return cached
    raise DiffusersModelNotFoundError(_missing_model_message(configured))


def _cached_hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of a hub repo id from the Hugging Face cache, without network."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def _missing_model_message(configured: Path | None) -> str:
    where = (
        "CLEARMARK_DIFFUSERS_MODEL_DIR is not set"
        if configured is None
        else f"CLEARMARK_DIFFUSERS_MODEL_DIR={configured} is neither a folder nor a repo id in the local Hugging Face cache"
    )
    return (
        f"The 'diffusers' inpainter needs a local Stable Diffusion inpainting model, but {where}. "
        "clearmark never downloads models at run time. On a machine with internet run "
        f"`pip install huggingface_hub && hf download {SUGGESTED_DIFFUSERS_MODEL} --exclude '*.ckpt' "
        "--local-dir sd-inpainting`, copy the sd-inpainting folder to this machine and set "
        "CLEARMARK_DIFFUSERS_MODEL_DIR to its path (or copy the Hugging Face cache and set "
        f"CLEARMARK_DIFFUSERS_MODEL_DIR={SUGGESTED_DIFFUSERS_MODEL} with HF_HUB_OFFLINE=1). "
        "Or use the CPU inpainter: --inpainter telea."
    )


def load_inpaint_pipeline(model_dir: Path, device: str) -> Any:
    """Load a diffusers inpainting pipeline from a local folder once per process and device."""
    with _PIPELINE_LOCK:  # two workers asking at once still load it once
        return _cached_inpaint_pipeline(model_dir.resolve(), device)


@lru_cache(maxsize=2)
def _cached_inpaint_pipeline(model_dir: Path, device: str) -> Any:
    """fp16 on CUDA, fp32 elsewhere; no safety checker (it blanks whole images on false
    positives, and removing a watermark generates no new content)."""
    import torch
    from diffusers import AutoPipelineForInpainting

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipeline = AutoPipelineForInpainting.from_pretrained(
        model_dir,
        dtype=dtype,
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)  # the caller shows one bar per archive
    return pipeline.to(device)


@dataclass(frozen=True)
class _CropJob:
    """Where one image's mask is inpainted: the context window and the pipeline size."""

    index: int
    top: int
    left: int
    bottom: int
    right: int
    height: int  # pipeline input size (multiple of SIZE_MULTIPLE)
    width: int


@dataclass
class DiffusersInpainter:
    """Stable Diffusion inpainting of the masked region at the pipeline's resolution.

    Each image is cropped to a square-ish window around the mask's bounding box plus
    context, resized so its long side is the pipeline's native resolution (multiples
    of 8), inpainted, resized back and pasted only inside the mask, so unmasked pixels
    stay identical.  Same-size crops run as one pipeline batch; every image gets its
    own generator seeded with ``seed``, so results do not depend on batch composition.
    """

    pipeline: Any
    thread_safe: ClassVar[bool] = False  # one pipeline per process; its scheduler state is shared
    name: str = "diffusers"
    num_inference_steps: int = 25
    guidance_scale: float = 5.0
    prompt: str = "clean photo, seamless background"
    negative_prompt: str = "watermark, text, logo, letters, signature"
    seed: int = 0
    context: float = 0.5  # margin around the mask box, as a fraction of its long side
    min_context: int = 32  # pixels of margin at least, so small marks still see surroundings
    resolution: int | None = None  # None: the pipeline's native size (512 for SD 1.5/2 inpainting)
    batch_size: int = 4
    _resolution: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._resolution = _round_to_multiple(self.resolution or _native_resolution(self.pipeline))
        if self.num_inference_steps < 1 or self.batch_size < 1:
            raise ValueError("num_inference_steps and batch_size must be at least 1.")

    def inpaint(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Inpaint one image (see the class docstring)."""
        return self.inpaint_batch([rgb], [mask])[0]

    def inpaint_batch(self, rgbs: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        """Inpaint several images, batching crops of the same pipeline size."""
        fills = [masked_pixels(rgb, mask) for rgb, mask in zip(rgbs, masks, strict=True)]
        results = [rgb.copy() for rgb in rgbs]
        jobs = [self._crop_job(index, fill) for index, fill in enumerate(fills) if fill.any()]
        by_size: dict[tuple[int, int], list[_CropJob]] = {}
        for job in jobs:
            by_size.setdefault((job.height, job.width), []).append(job)
        for same_size in by_size.values():
            for start in range(0, len(same_size), self.batch_size):
                chunk = same_size[start : start + self.batch_size]
                painted = self._run_pipeline(chunk, rgbs, fills)
                for job, crop in zip(chunk, painted, strict=True):
                    _paste_inside_mask(results[job.index], crop, fills[job.index], job)
        return results

    def _crop_job(self, index: int, fill: np.ndarray) -> _CropJob:
        """Context window around the mask's bounding box, square where the image allows."""
        box = mask_box(fill)
        assert box is not None, "only images with masked pixels get a crop job"
        box_top, box_bottom, box_left, box_right = box
        long_side = max(box_bottom - box_top, box_right - box_left)
        side = long_side + 2 * max(self.min_context, round(self.context * long_side))
        image_h, image_w = fill.shape
        top, bottom = _window((box_top + box_bottom) / 2, side, image_h)
        left, right = _window((box_left + box_right) / 2, side, image_w)
        scale = self._resolution / max(bottom - top, right - left)
        return _CropJob(
            index=index,
            top=top,
            left=left,
            bottom=bottom,
            right=right,
            height=_round_to_multiple((bottom - top) * scale),
            width=_round_to_multiple((right - left) * scale),
        )

    def _run_pipeline(self, jobs: list[_CropJob], rgbs: list[np.ndarray], fills: list[np.ndarray]) -> list[np.ndarray]:
        """One pipeline call over same-size crops; returns uint8 crops at pipeline size."""
        import cv2
        import numpy as np
        import torch
        from PIL import Image

        height, width = jobs[0].height, jobs[0].width
        # The UNet sees the mask downsampled (nearest) to latent cells: widen strokes to one
        # cell so thin ones are not dropped (only pixels inside the true mask are pasted).
        grow = np.ones((self.pipeline.vae_scale_factor + 1,) * 2, np.uint8)
        images, mask_images = [], []
        for job in jobs:
            window = np.s_[job.top : job.bottom, job.left : job.right]
            crop = _resize(rgbs[job.index][window], width, height)
            coverage = cv2.resize(fills[job.index][window].astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
            images.append(Image.fromarray(crop))
            mask_images.append(Image.fromarray(cv2.dilate((coverage > 0).astype(np.uint8) * 255, grow)))
        with _PIPELINE_LOCK, torch.inference_mode():
            output = self.pipeline(
                prompt=[self.prompt] * len(jobs),
                negative_prompt=[self.negative_prompt] * len(jobs),
                image=images,
                mask_image=mask_images,
                height=height,
                width=width,
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                generator=[torch.Generator("cpu").manual_seed(self.seed) for _ in jobs],
                output_type="np",
            ).images
        return [np.clip(np.rint(image * 255), 0, 255).astype(np.uint8) for image in output]


def _native_resolution(pipeline: Any) -> int:
    """Side the pipeline was trained at: denoiser sample size (UNet for SD/SDXL, transformer
    for SD3/Flux) times the VAE's downsampling factor."""
    unet = getattr(pipeline, "unet", None)
    sample_size = unet.config.sample_size if unet is not None else pipeline.default_sample_size
    return int(sample_size) * int(pipeline.vae_scale_factor)


def _window(centre: float, side: int, limit: int) -> tuple[int, int]:
    """``[start, end)`` of length ``side`` centred on ``centre``, shifted to fit in ``[0, limit)``."""
    side = min(side, limit)
    start = min(max(0, round(centre - side / 2)), limit - side)
    return start, start + side


def _round_to_multiple(value: float) -> int:
    """Nearest positive multiple of :data:`SIZE_MULTIPLE`."""
    return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an image: area averaging to shrink (no aliasing), bicubic to enlarge."""
    import cv2
    import numpy as np

    shrinking = width * height < rgb.shape[0] * rgb.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(rgb), (width, height), interpolation=interpolation)


def _paste_inside_mask(result: np.ndarray, painted: np.ndarray, fill: np.ndarray, job: _CropJob) -> None:
    """Resize the painted crop back to its window and copy only the masked pixels."""
    window = (slice(job.top, job.bottom), slice(job.left, job.right))
    restored = _resize(painted, job.right - job.left, job.bottom - job.top)
    inside = fill[window]
    result[window][inside] = restored[inside]


@register_inpainter("diffusers")
def _diffusers(settings: Settings, device: str | None = None, **options: Any) -> Inpainter:
    """Stable Diffusion inpainting from ``settings.diffusers_model_dir``; GPU (fp16) when present."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return DiffusersInpainter(pipeline=load_inpaint_pipeline(resolve_diffusers_model(settings), device), **options)
