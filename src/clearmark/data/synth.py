"""Deterministic synthetic (clean, watermarked, mask) triples, built fully offline.

Clean images are crops of the natural images that scikit-image ships inside its
wheel (no download) or procedural backgrounds (gradients, fractal "plasma", noise,
shapes).  Watermarks are text (Pillow's built-in font and, when installed,
matplotlib's DejaVu TrueType fonts) or logos (discs, rings, stars, rounded
rectangles, polygons, badges), single, in a corner, or tiled, in white, black, grey
or colour, solid or with a gradient, at opacity 0.2-0.8.

``styles="heldout"`` draws the watermarks in styles the training set never has: other
fonts (STIX, other DejaVu variants), other logo shapes (crosses, crescents, arrows,
hearts, shields) and opacities outside 0.2-0.8 (faint or strong), for benchmarks on
watermarks the detector has not seen.  The default ``styles="train"`` is what the
embedded dataset and the bundled baseline were made with, and stays byte-identical.

``styles="photo-train"`` and ``"photo-heldout"`` draw the watermark families seen in practice
(:mod:`clearmark.data.marks`) on crops of real photographs (:mod:`clearmark.data.photos`),
from disjoint photo sources, font families and logo shapes, and also write each mark's exact
soft matte (``alpha/``, 16-bit) and colour layer (``colour/``, RGB), with
``watermarked = alpha * colour + (1 - alpha) * clean`` up to rounding (and JPEG, when
``jpeg_quality`` re-compresses the watermarked image).  ``photo_folder`` draws the
backgrounds from the user's own clean photos instead.

Every mask of the train and heldout styles is exact: 255 where the watermark's shape alpha (before the opacity
fade) is >= 0.5, else 0.  Shape alpha below 0.5 is dropped before compositing, so a
pixel outside the mask is byte-identical to the clean image.

Image ``i`` depends only on ``(seed, i, size)``: a larger ``count`` adds images
without changing the first ones, and the same arguments give byte-identical PNGs.
"""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from clearmark.data.logos import LOGO_DRAWERS
from clearmark.data.photos import photo_crop

if TYPE_CHECKING:
    import numpy as np
    from PIL import ImageFont

# scikit-image images stored in its wheel (others need a pooch download).  Images that
# are themselves text or documents ("page", "text") are left out: a clean image with
# lettering would teach the detector that lettering is not a watermark.
NATURAL_IMAGES = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "stereo_motorcycle", "colorwheel", "camera", "brick", "grass", "gravel",
    "moon", "coins", "clock", "cell",
)  # fmt: skip
BACKGROUND_WEIGHTS = {"natural": 0.55, "plasma": 0.15, "gradient": 0.1, "shapes": 0.12, "noise": 0.08}
WATERMARK_WEIGHTS = {"text": 0.24, "corner_text": 0.14, "tiled_text": 0.16, "logo": 0.2, "logo_text": 0.12, "tiled_logo": 0.14}
WORDS = (
    "SAMPLE", "PREVIEW", "PROOF", "DRAFT", "COPY", "STOCK", "DEMO", "clearmark", "PhotoHub",
    "ShutterBox", "pixelvault", "CONFIDENTIAL", "watermark", "Licensed", "NOT FOR SALE",
)  # fmt: skip
OWNERS = ("Jane Doe", "A. Weber", "Studio Nord", "M. Rossi", "Lumen Foto", "K. Tanaka", "OpenPix")
DEJAVU_FONTS = (
    "DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSans-BoldOblique.ttf", "DejaVuSerif.ttf",
)  # fmt: skip
LOGO_SHAPES = ("disc", "ring", "star", "rounded_rect", "polygon", "badge")
# Not in DEJAVU_FONTS, and with every character of WORDS and OWNERS (matplotlib's Computer
# Modern fonts are left out: their encoding draws "©" as a Greek Phi).
HELDOUT_FONTS = (
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSans-Oblique.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
)  # fmt: skip
HELDOUT_LOGO_SHAPES = ("cross", "crescent", "arrow", "heart", "shield")
PILLOW_FONT = "Pillow default"  # how Pillow's built-in font is named in SynthItem.fonts
SUPERSAMPLE = 4  # logos are drawn 4x larger and box-reduced: anti-aliased edges
COVERAGE_RANGE = (0.008, 0.32)  # a watermark outside this range is drawn again
MIN_VISIBLE_DIFF = 20  # grey levels a masked pixel must change by to count as visible
MIN_VISIBLE_SHARE = 0.9
MIN_TEXT_SIZE = 0.09  # font size as a share of the side: capitals are >= ~6% of it
PNG_LEVEL = 1  # 5x faster than the default level for 15% larger files


@dataclass(frozen=True)
class StyleSet:
    """The watermark styles a generator mode draws from."""

    name: str
    fonts: tuple[str | None, ...]  # files in matplotlib's mpl-data/fonts/ttf; None: Pillow's built-in font
    logo_shapes: tuple[str, ...]
    opacity_ranges: tuple[tuple[float, float], ...]  # each image picks one range, then an opacity in it

    def describe(self) -> str:
        """One line for reports: the fonts, logo shapes and opacity ranges."""
        fonts = ", ".join(PILLOW_FONT if font is None else font.removesuffix(".ttf") for font in self.fonts)
        opacities = ", ".join(f"{low:g}-{high:g}" for low, high in self.opacity_ranges)
        return f"{self.name} styles: fonts {fonts}; logos {', '.join(self.logo_shapes)}; opacity {opacities}"


TRAIN_STYLES = StyleSet("train", (None, *DEJAVU_FONTS), LOGO_SHAPES, ((0.2, 0.8),))
# A small gap to the training range, so that no held-out opacity is one training could draw.
HELDOUT_STYLES = StyleSet("heldout", HELDOUT_FONTS, HELDOUT_LOGO_SHAPES, ((0.12, 0.18), (0.82, 0.95)))
STYLE_SETS = {style_set.name: style_set for style_set in (TRAIN_STYLES, HELDOUT_STYLES)}
Styles = Literal["train", "heldout", "photo-train", "photo-heldout"]
# Procedural backgrounds of the photo styles: scikit-image's photos ("natural") are a photo source of their own there.
PROCEDURAL_WEIGHTS = {kind: weight for kind, weight in BACKGROUND_WEIGHTS.items() if kind != "natural"}
JPEG_QUALITY_RANGE = (70, 98)  # what --jpeg-quality may ask for


@dataclass(frozen=True)
class SynthItem:
    """What one generated image holds."""

    name: str
    background: str
    watermark: str
    coverage: float
    fonts: tuple[str, ...]  # font file names of its text (PILLOW_FONT for Pillow's built-in one)
    logos: tuple[str, ...]  # shapes of its logos
    opacity: float
    photo: str = ""  # file name of the photograph under it (photo styles)
    jpeg_quality: int | None = None  # quality the watermarked image was re-compressed at


@dataclass(frozen=True)
class SynthSummary:
    """Result of :func:`generate_synthetic`."""

    out_dir: Path
    count: int
    seed: int
    size: int
    items: tuple[SynthItem, ...]
    styles: Styles = "train"

    @property
    def names(self) -> list[str]:
        return [item.name for item in self.items]

    @property
    def mean_coverage(self) -> float:
        return sum(item.coverage for item in self.items) / max(1, len(self.items))

    def kinds(self) -> dict[str, int]:
        """How many images of each watermark kind were generated."""
        return dict(Counter(item.watermark for item in self.items))


def synth_name(index: int) -> str:
    """File name of image ``index`` (identical in clean/, watermarked/, masks/, and alpha/ and colour/ of photo styles)."""
    return f"synth_{index:05d}.png"


def generate_synthetic(
    out_dir: Path,
    count: int,
    seed: int,
    *,
    size: int = 256,
    styles: Styles = "train",
    progress: bool = True,
    jpeg_quality: tuple[int, int] | None = None,
    photo_folder: Path | None = None,
) -> SynthSummary:
    """Write ``count`` triples to ``out_dir/{clean,watermarked,masks}/synth_NNNNN.png``.

    Same arguments give byte-identical files; nothing is downloaded.
    ``styles="heldout"`` draws watermarks in fonts, logo shapes and opacities that the
    default ``"train"`` styles never use (see :data:`HELDOUT_STYLES`).  The photo styles
    (module docstring) add ``alpha/`` and ``colour/``; with them, ``jpeg_quality=(low, high)``
    re-compresses each watermarked image at a quality drawn in that range, and
    ``photo_folder`` takes the backgrounds from a folder of the user's clean photos.
    """
    from clearmark.data.marks import MARK_STYLE_SETS

    if count < 1:
        raise ValueError(f"count must be at least 1 (got {count}).")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels so that watermarks stay legible (got {size}).")
    if styles in MARK_STYLE_SETS:
        return _generate_on_photos(Path(out_dir), count, seed, size, styles, progress, jpeg_quality, photo_folder)
    style_set = STYLE_SETS.get(styles)
    if style_set is None:
        raise ValueError(f"styles must be one of {', '.join([*STYLE_SETS, *MARK_STYLE_SETS])} (got {styles!r}).")
    if jpeg_quality is not None or photo_folder is not None:
        raise ValueError(f"jpeg_quality and photo_folder need a photo style ({', '.join(MARK_STYLE_SETS)}), not {styles!r}.")
    return _generate_procedural(Path(out_dir), count, seed, size, styles, style_set, progress)


def _generate_procedural(out_dir: Path, count: int, seed: int, size: int, styles: Styles, style_set: StyleSet, progress: bool) -> SynthSummary:
    import numpy as np
    from PIL import Image

    from clearmark.progress import progress_bar

    _require_fonts(style_set)
    out_dir = Path(out_dir)
    folders = {part: out_dir / part for part in ("clean", "watermarked", "masks")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)

    items: list[SynthItem] = []
    for index in progress_bar(range(count), desc="synthetic images", unit="img", disable=not progress):
        rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
        clean, watermarked, mask, item = _make_triple(rng, size, synth_name(index), style_set)
        Image.fromarray(clean).save(folders["clean"] / item.name, format="PNG", compress_level=PNG_LEVEL)
        Image.fromarray(watermarked).save(folders["watermarked"] / item.name, format="PNG", compress_level=PNG_LEVEL)
        Image.fromarray(mask).save(folders["masks"] / item.name, format="PNG", compress_level=PNG_LEVEL)
        items.append(item)
    return SynthSummary(out_dir=out_dir, count=count, seed=seed, size=size, items=tuple(items), styles=styles)


def _generate_on_photos(
    out_dir: Path, count: int, seed: int, size: int, styles: Styles, progress: bool,
    jpeg_quality: tuple[int, int] | None, photo_folder: Path | None,
) -> SynthSummary:  # fmt: skip
    import numpy as np
    from PIL import Image

    from clearmark.data.marks import MARK_STYLE_SETS, draw_mark, font_files
    from clearmark.data.photos import folder_photos, photo_files
    from clearmark.progress import progress_bar

    mark_styles = MARK_STYLE_SETS[styles]
    if jpeg_quality is not None and not JPEG_QUALITY_RANGE[0] <= jpeg_quality[0] <= jpeg_quality[1] <= JPEG_QUALITY_RANGE[1]:
        raise ValueError(f"jpeg_quality must be (low, high) with {JPEG_QUALITY_RANGE[0]} <= low <= high <= {JPEG_QUALITY_RANGE[1]} (got {jpeg_quality}).")
    font_files(mark_styles.role)  # a missing font package is reported before anything is written
    if photo_folder is not None:
        sources = {"folder": folder_photos(photo_folder)}
    else:
        sources = photo_files(mark_styles.role)
    source_of = {path: name for name, paths in sources.items() for path in paths}
    backgrounds = sorted(source_of)
    folders = {part: out_dir / part for part in ("clean", "watermarked", "masks", "alpha", "colour")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)

    items: list[SynthItem] = []
    for index in progress_bar(range(count), desc=f"{styles} images", unit="img", disable=not progress):
        rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
        if photo_folder is None and rng.random() < mark_styles.procedural_share:
            background = _choose(rng, PROCEDURAL_WEIGHTS)
            clean, photo = _BACKGROUNDS[background](rng, size), ""
        else:
            clean, path = photo_crop(rng, backgrounds, size)
            background, photo = source_of[path], path.name
        matte, mark = draw_mark(rng, size, mark_styles)
        watermarked = matte.blend(clean)
        quality = None
        if jpeg_quality is not None:  # its own stream: switching JPEG on leaves the marks as they were
            quality = int(np.random.default_rng(np.random.SeedSequence([seed, index, 1])).integers(jpeg_quality[0], jpeg_quality[1] + 1))
            watermarked = _jpeg_round_trip(watermarked, quality)
        mask = matte.footprint
        name = synth_name(index)
        for part, array in (("clean", clean), ("watermarked", watermarked), ("masks", (mask * 255).astype(np.uint8)), ("alpha", matte.alpha_png()), ("colour", matte.colour)):
            Image.fromarray(array).save(folders[part] / name, format="PNG", compress_level=PNG_LEVEL)
        items.append(
            SynthItem(
                name=name, background=background, watermark=mark.family, coverage=float(mask.mean()), fonts=mark.fonts,
                logos=mark.logos, opacity=mark.opacity, photo=photo, jpeg_quality=quality,
            )
        )
    return SynthSummary(out_dir=out_dir, count=count, seed=seed, size=size, items=tuple(items), styles=styles)


def _jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


# --- one triple ---------------------------------------------------------------------------


@dataclass
class _Pen:
    """Draws one watermark in a style set and notes the fonts and logo shapes it drew."""

    styles: StyleSet
    fonts: list[str] = field(default_factory=list)
    logos: list[str] = field(default_factory=list)


def _make_triple(
    rng: np.random.Generator, size: int, name: str, styles: StyleSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray, SynthItem]:
    import numpy as np

    background_kind = _choose(rng, BACKGROUND_WEIGHTS)
    clean = _BACKGROUNDS[background_kind](rng, size)
    watermark_kind = _choose(rng, WATERMARK_WEIGHTS)
    for _ in range(8):
        pen = _Pen(styles)
        alpha = _WATERMARKS[watermark_kind](rng, size, pen)
        coverage = float((alpha >= 0.5).mean())
        if COVERAGE_RANGE[0] <= coverage <= COVERAGE_RANGE[1]:
            break
    shape = np.where(alpha >= 0.5, alpha, 0.0).astype(np.float32)  # faint fringe dropped: mask is exact
    mask = shape > 0
    colour = _watermark_colour(rng, size, gradient=watermark_kind in {"logo", "tiled_logo", "logo_text"})
    # A single range (train) takes no draw to pick, so the train images stay as they were.
    ranges = styles.opacity_ranges
    low, high = ranges[0] if len(ranges) == 1 else ranges[int(rng.integers(len(ranges)))]
    opacity = float(rng.uniform(low, high))
    for _ in range(4):
        watermarked = _composite(clean, colour, shape * opacity)
        if _visible_share(clean, watermarked, mask) >= MIN_VISIBLE_SHARE:
            break
        # Too close to the background: switch to the contrasting plain colour, more opaque.
        colour = _contrasting_colour(clean, mask, size)
        opacity = min(high, opacity + 0.2)
    item = SynthItem(
        name=name, background=background_kind, watermark=watermark_kind, coverage=float(mask.mean()),
        fonts=tuple(pen.fonts), logos=tuple(pen.logos), opacity=opacity,
    )  # fmt: skip
    return clean, watermarked, (mask * 255).astype(np.uint8), item


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    probabilities = [weights[name] for name in names]
    total = sum(probabilities)
    return names[int(rng.choice(len(names), p=[p / total for p in probabilities]))]


def _composite(clean: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    import numpy as np

    base = clean.astype(np.float32)
    blended = base + alpha[..., None] * (colour - base)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _visible_share(clean: np.ndarray, watermarked: np.ndarray, mask: np.ndarray) -> float:
    import numpy as np

    if not mask.any():
        return 0.0
    diff = np.abs(clean.astype(np.int16) - watermarked.astype(np.int16)).max(axis=2)
    return float((diff[mask] >= MIN_VISIBLE_DIFF).mean())


# --- backgrounds -------------------------------------------------------------------------


@lru_cache(maxsize=len(NATURAL_IMAGES))
def _natural_image(name: str) -> np.ndarray:
    """RGB uint8 copy of a scikit-image sample (grey ones stacked to 3 channels)."""
    import numpy as np
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=2)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def _background_natural(rng: np.random.Generator, size: int) -> np.ndarray:
    import numpy as np
    from PIL import Image

    source = _natural_image(NATURAL_IMAGES[int(rng.integers(len(NATURAL_IMAGES)))])
    height, width = source.shape[:2]
    side = int(min(height, width) * rng.uniform(0.4, 1.0))
    crop_w = min(width, int(side * rng.uniform(0.85, 1.15)))
    crop_h = min(height, side)
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    crop = Image.fromarray(source[top : top + crop_h, left : left + crop_w]).resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(crop).astype(np.float32)
    if rng.random() < 0.5:
        array = array[:, ::-1]
    if np.ptp(source[..., 0].astype(np.int16) - source[..., 1]) == 0:  # grey source: tint it
        array = array * rng.uniform(0.75, 1.1, size=3).astype(np.float32)
    return np.clip(array, 0, 255).astype(np.uint8)


def _background_gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    import numpy as np

    return np.clip(_gradient(rng, size) + rng.normal(0, 2.0, (size, size, 1)), 0, 255).astype(np.uint8)


def _background_plasma(rng: np.random.Generator, size: int) -> np.ndarray:
    """Fractal value noise: random grids of growing resolution, upsampled and summed."""
    import numpy as np
    from PIL import Image

    total = np.zeros((size, size, 3), np.float32)
    for octave in range(1, 6):
        cells = 2**octave
        grid = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
        layer = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC), np.float32)
        total += layer / octave
    total -= total.min(axis=(0, 1))
    total /= np.maximum(total.max(axis=(0, 1)), 1e-6)
    low = rng.uniform(0, 120, 3)
    high = rng.uniform(140, 255, 3)
    return (low + total * (high - low)).astype(np.uint8)


def _background_shapes(rng: np.random.Generator, size: int) -> np.ndarray:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("RGB", (size, size), _random_rgb(rng))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 16))):
        x0, y0 = rng.integers(-size // 4, size, 2)
        w, h = rng.integers(size // 10, size // 2, 2)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        kind = int(rng.integers(3))
        if kind == 0:
            draw.rectangle(box, fill=_random_rgb(rng))
        elif kind == 1:
            draw.ellipse(box, fill=_random_rgb(rng))
        else:
            draw.regular_polygon((int(x0 + w / 2), int(y0 + h / 2), int(w / 2)), int(rng.integers(3, 8)), rotation=float(rng.uniform(0, 360)), fill=_random_rgb(rng))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.5)))))


def _background_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    import numpy as np
    from PIL import Image, ImageFilter

    base = np.array(_random_rgb(rng), np.float32)
    noisy = np.clip(base + rng.normal(0, rng.uniform(5, 40), (size, size, 3)), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(noisy).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 2.0)))))


_BACKGROUNDS = {
    "natural": _background_natural,
    "gradient": _background_gradient,
    "plasma": _background_plasma,
    "shapes": _background_shapes,
    "noise": _background_noise,
}


def _random_rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in rng.integers(0, 256, 3))
    return red, green, blue


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """size x size x 3 float32 linear gradient between two random colours at a random angle."""
    import numpy as np

    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    start = np.array(_random_rgb(rng), np.float32)
    end = np.array(_random_rgb(rng), np.float32)
    return start + t[..., None] * (end - start)


# --- watermark colour --------------------------------------------------------------------


def _watermark_colour(rng: np.random.Generator, size: int, *, gradient: bool) -> np.ndarray:
    """size x size x 3 float32 colour field: plain white/black/grey/colour, or a gradient."""
    import numpy as np

    if gradient and rng.random() < 0.6:
        return _gradient(rng, size)
    pick = rng.random()
    if pick < 0.3:
        rgb: tuple[int, ...] = (255, 255, 255)
    elif pick < 0.5:
        rgb = (0, 0, 0)
    elif pick < 0.65:
        rgb = (int(rng.integers(90, 200)),) * 3
    else:
        rgb = _random_rgb(rng)
    return np.broadcast_to(np.array(rgb, np.float32), (size, size, 3))


def _contrasting_colour(clean: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """White on dark backgrounds, black on light ones (judged under the mask)."""
    import numpy as np

    luminance = float(clean[mask].mean()) if mask.any() else 128.0
    value = 0.0 if luminance > 127 else 255.0
    return np.full((size, size, 3), value, np.float32)


# --- watermark shapes (alpha in 0..1, float32, size x size) -------------------------------


def _matplotlib_font_folder() -> Path | None:
    """matplotlib's bundled TrueType folder, or None without matplotlib."""
    spec = importlib.util.find_spec("matplotlib")  # find, not import: matplotlib is slow to import
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"


@lru_cache(maxsize=len(STYLE_SETS))
def _font_files(styles: StyleSet) -> tuple[str | None, ...]:
    """The style set's fonts usable offline, in its order; ``None`` stands for Pillow's built-in font."""
    folder = _matplotlib_font_folder()
    return tuple(
        None if name is None else str(folder / name)
        for name in styles.fonts
        if name is None or (folder is not None and (folder / name).is_file())
    )


def _require_fonts(styles: StyleSet) -> None:
    if not _font_files(styles):
        raise ValueError(
            f"None of the {styles.name} fonts ({', '.join(str(name) for name in styles.fonts)}) was found in "
            f"matplotlib's mpl-data/fonts/ttf folder ({_matplotlib_font_folder() or 'matplotlib is not installed'}). "
            "Install matplotlib into this environment (pip install matplotlib): it ships them, no download at run time."
        )


@lru_cache(maxsize=512)
def _font(path: str | None, pixels: int) -> ImageFont.FreeTypeFont:
    from PIL import ImageFont

    if path is None:
        return ImageFont.load_default(size=pixels)  # type: ignore[return-value]
    return ImageFont.truetype(path, pixels)


def _random_text(rng: np.random.Generator, *, single_word: bool = False) -> str:
    word = WORDS[int(rng.integers(len(WORDS)))]
    if single_word:
        return word.split()[0]
    owner = OWNERS[int(rng.integers(len(OWNERS)))]
    year = int(rng.integers(1998, 2027))
    templates = (word, f"© {owner}", f"© {owner} {year}", f"{word} {year}", f"www.{owner.lower().replace(' ', '').replace('.', '')}.com")
    return templates[int(rng.integers(len(templates)))]


def _text_layer(rng: np.random.Generator, pen: _Pen, text: str, pixels: int, rotation: float) -> np.ndarray:
    """Tight float32 alpha of ``text`` rendered at ``pixels`` font size, rotated."""
    import numpy as np
    from PIL import Image, ImageDraw

    fonts = _font_files(pen.styles)
    path = fonts[int(rng.integers(len(fonts)))]
    pen.fonts.append(PILLOW_FONT if path is None else Path(path).name)
    font = _font(path, pixels)
    # Strokes of at least 1 px on small text: thin glyphs would be a mask of anti-aliased fringes.
    stroke = int(rng.integers(1 if pixels < 40 else 0, max(2, pixels // 12) + 1))
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font, stroke_width=stroke)
    layer = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(layer).text((1 - left, 1 - top), text, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    if rotation:
        layer = layer.rotate(rotation, resample=Image.Resampling.BICUBIC, expand=True)
    return np.asarray(layer, np.float32) / 255.0


def _logo_layer(rng: np.random.Generator, pen: _Pen, side: int, rotation: float) -> np.ndarray:
    """Float32 alpha of a random logo shape of the style set in a ``side`` x ``side`` box (anti-aliased)."""
    import numpy as np
    from PIL import Image, ImageDraw

    big = side * SUPERSAMPLE
    layer = Image.new("L", (big, big), 0)
    centre = big / 2
    radius = big / 2 - SUPERSAMPLE
    shape = pen.styles.logo_shapes[int(rng.integers(len(pen.styles.logo_shapes)))]
    pen.logos.append(shape)
    ring_width = max(SUPERSAMPLE * 2, int(radius * rng.uniform(0.15, 0.3)))
    LOGO_DRAWERS[shape](ImageDraw.Draw(layer), rng, centre, radius, ring_width)
    layer = layer.reduce(SUPERSAMPLE)
    if rotation:
        layer = layer.rotate(rotation, resample=Image.Resampling.BICUBIC, expand=True)
    return np.asarray(layer, np.float32) / 255.0


def _stamp(canvas: np.ndarray, layer: np.ndarray, x: int, y: int) -> None:
    """Max-combine ``layer`` into ``canvas`` with its top-left at (x, y), clipped to the canvas."""
    import numpy as np

    height, width = canvas.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + layer.shape[1], width), min(y + layer.shape[0], height)
    if x0 >= x1 or y0 >= y1:
        return
    region = layer[y0 - y : y1 - y, x0 - x : x1 - x]
    np.maximum(canvas[y0:y1, x0:x1], region, out=canvas[y0:y1, x0:x1])


def _place_randomly(rng: np.random.Generator, canvas: np.ndarray, layer: np.ndarray) -> None:
    size = canvas.shape[0]
    x = int(rng.integers(0, max(1, size - layer.shape[1]) + 1))
    y = int(rng.integers(0, max(1, size - layer.shape[0]) + 1))
    _stamp(canvas, layer, x, y)


def _tile(rng: np.random.Generator, canvas: np.ndarray, layer: np.ndarray, gap: float) -> None:
    """Repeat ``layer`` over the canvas on a staggered grid ``gap`` times its size apart."""
    size = canvas.shape[0]
    step_x = max(4, int(layer.shape[1] * (1 + gap)))
    step_y = max(4, int(layer.shape[0] * (1 + gap)))
    start_x, start_y = -int(rng.integers(0, step_x)), -int(rng.integers(0, step_y))
    for row, y in enumerate(range(start_y, size, step_y)):
        shift = step_x // 2 if row % 2 else 0
        for x in range(start_x - shift, size, step_x):
            _stamp(canvas, layer, x, y)


def _fit(layer: np.ndarray, size: int) -> bool:
    return layer.shape[0] <= size and layer.shape[1] <= size


def _watermark_text(rng: np.random.Generator, size: int, pen: _Pen) -> np.ndarray:
    import numpy as np

    canvas = np.zeros((size, size), np.float32)
    text = _random_text(rng)
    rotation = float(rng.uniform(-45, 45)) if rng.random() < 0.5 else 0.0
    pixels = int(size * rng.uniform(0.1, 0.2))
    layer = _text_layer(rng, pen, text, pixels, rotation)
    while not _fit(layer, size) and pixels * 0.85 >= size * MIN_TEXT_SIZE:  # long text: shrink until it fits
        pixels = int(pixels * 0.85)
        pen.fonts.pop()  # the smaller rendering replaces this one
        layer = _text_layer(rng, pen, text, pixels, rotation)
    _place_randomly(rng, canvas, layer)
    return canvas


def _watermark_corner_text(rng: np.random.Generator, size: int, pen: _Pen) -> np.ndarray:
    import numpy as np

    canvas = np.zeros((size, size), np.float32)
    layer = _text_layer(rng, pen, _random_text(rng, single_word=True), int(size * rng.uniform(0.09, 0.14)), 0.0)
    margin = int(size * rng.uniform(0.02, 0.06))
    right, bottom = rng.random(2) < 0.5
    x = size - margin - layer.shape[1] if right else margin
    y = size - margin - layer.shape[0] if bottom else margin
    _stamp(canvas, layer, x, y)
    return canvas


def _watermark_tiled_text(rng: np.random.Generator, size: int, pen: _Pen) -> np.ndarray:
    import numpy as np

    canvas = np.zeros((size, size), np.float32)
    rotation = float(rng.choice([0.0, 30.0, -30.0, 45.0, -45.0]))
    layer = _text_layer(rng, pen, _random_text(rng), int(size * rng.uniform(MIN_TEXT_SIZE, 0.12)), rotation)
    _tile(rng, canvas, layer, gap=float(rng.uniform(0.3, 1.0)))
    return canvas


def _watermark_logo(rng: np.random.Generator, size: int, pen: _Pen) -> np.ndarray:
    import numpy as np

    canvas = np.zeros((size, size), np.float32)
    rotation = float(rng.uniform(-30, 30)) if rng.random() < 0.4 else 0.0
    _place_randomly(rng, canvas, _logo_layer(rng, pen, int(size * rng.uniform(0.2, 0.5)), rotation))
    return canvas


def _watermark_logo_text(rng: np.random.Generator, size: int, pen: _Pen) -> np.ndarray:
    """A small logo with a name beside it, like a photo agency's signature."""
    import numpy as np

    logo = _logo_layer(rng, pen, int(size * rng.uniform(0.14, 0.24)), 0.0)
    text = _text_layer(rng, pen, _random_text(rng), max(int(size * MIN_TEXT_SIZE), int(logo.shape[0] * rng.uniform(0.55, 0.8))), 0.0)
    if logo.shape[1] + text.shape[1] + 4 > size:
        pen.fonts.pop()  # a single word replaces the text that does not fit
        text = _text_layer(rng, pen, _random_text(rng, single_word=True), int(size * MIN_TEXT_SIZE), 0.0)
    block = np.zeros((max(logo.shape[0], text.shape[0]), logo.shape[1] + 4 + text.shape[1]), np.float32)
    _stamp(block, logo, 0, 0)
    _stamp(block, text, logo.shape[1] + 4, (block.shape[0] - text.shape[0]) // 2)
    canvas = np.zeros((size, size), np.float32)
    _place_randomly(rng, canvas, block)
    return canvas


def _watermark_tiled_logo(rng: np.random.Generator, size: int, pen: _Pen) -> np.ndarray:
    import numpy as np

    canvas = np.zeros((size, size), np.float32)
    layer = _logo_layer(rng, pen, int(size * rng.uniform(0.1, 0.18)), float(rng.uniform(0, 45)))
    _tile(rng, canvas, layer, gap=float(rng.uniform(0.5, 1.5)))
    return canvas


_WATERMARKS = {
    "text": _watermark_text,
    "corner_text": _watermark_corner_text,
    "tiled_text": _watermark_tiled_text,
    "logo": _watermark_logo,
    "logo_text": _watermark_logo_text,
    "tiled_logo": _watermark_tiled_logo,
}
