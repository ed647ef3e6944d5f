"""Watermarks in the families seen in practice, drawn as an exact soft matte and colour layer.

A mark is a stack of layers (text, logos, lines, shadows, outlines, bars), each an alpha in
0..1 and a colour, composited with the *over* operator into one matte ``alpha`` and one
colour layer ``W`` (RGB), so that the watermarked image is exactly

    J = alpha * W + (1 - alpha) * I

up to rounding.  :func:`draw_mark` quantises both as they are saved (``alpha`` to 16 bits,
``W`` to 8), and :meth:`Matte.blend` composites with those quantised values, so the saved
files satisfy the equation within half a grey level.

Families (:data:`FAMILY_WEIGHTS`): stock-photo tiles (logo + name on a diagonal grid, with
thin lines), a centred semi-transparent logo with its name, corner signatures (script
fonts), copyright lines (optionally on a translucent bar), camera date stamps, outlined /
embossed / drop-shadowed / glowing text, rubber stamps and badges, multi-line blocks and
coloured logos.  Edges are hard or soft; a global opacity in 0.1-1.0 fades the whole mark.

Fonts come from Debian ``fonts-*`` packages (:data:`FONT_SOURCES`), split by family into
train and held-out lists, like the logo shapes of :data:`MARK_STYLE_SETS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from clearmark.data import photos
from clearmark.data.logos import LOGO_DRAWERS
from clearmark.data.photos import Role

if TYPE_CHECKING:
    import numpy as np
    from PIL import ImageFont

FontKind = Literal["sans", "serif", "script", "display", "mono"]
ALPHA_LEVELS = 65535  # alpha/ PNGs are 16-bit
MIN_ALPHA = 1 / 512  # below this a mark cannot move an 8-bit pixel by half a level: dropped, so the mask is exact
SUPERSAMPLE = 4
COVERAGE_RANGE = (0.003, 0.7)  # share of pixels under the footprint; a mark outside it is drawn again


@dataclass(frozen=True)
class FontSource:
    """One Debian font package: its family, the kind of lettering, and the split it serves."""

    package: str
    family: str
    kind: FontKind
    patterns: tuple[str, ...]  # globs relative to photos.DEBIAN_ROOT
    role: Role
    licence: str

    def files(self) -> list[Path]:
        root = photos.DEBIAN_ROOT
        return sorted({path for pattern in self.patterns for path in root.glob(pattern) if path.is_file()})


def _fonts(package: str, family: str, kind: FontKind, pattern: str, role: Role, licence: str = "OFL-1.1") -> FontSource:
    return FontSource(package, family, kind, ("usr/share/fonts/" + pattern,), role, licence)


# Every font has the letters, digits and "©" the marks write (checked when chosen: see
# tests/code/test_data_marks.py).  Train and held-out share no family.
FONT_SOURCES = (
    _fonts("fonts-open-sans", "Open Sans", "sans", "truetype/open-sans/OpenSans-*.ttf", "train", "Apache-2.0"),
    _fonts("fonts-cantarell", "Cantarell", "sans", "opentype/cantarell/Cantarell-*.otf", "train"),
    _fonts("fonts-crosextra-carlito", "Carlito", "sans", "truetype/crosextra/Carlito-*.ttf", "train"),
    _fonts("fonts-adf-gillius", "Gillius ADF", "sans", "truetype/adf/GilliusADF*.otf", "train", "GPL-2+ with font exception"),
    _fonts("fonts-league-spartan", "League Spartan", "display", "opentype/league-spartan/LeagueSpartan-*.otf", "train"),
    _fonts("fonts-bebas-neue", "Bebas Neue", "display", "opentype/bebas-neue/BebasNeue-*.otf", "train"),
    _fonts("fonts-yanone-kaffeesatz", "Yanone Kaffeesatz", "display", "opentype/yanone-kaffeesatz/YanoneKaffeesatz-*.otf", "train"),
    _fonts("fonts-quicksand", "Quicksand", "display", "truetype/quicksand/Quicksand-*.ttf", "train"),
    _fonts("fonts-crosextra-caladea", "Caladea", "serif", "truetype/crosextra/Caladea-*.ttf", "train", "Apache-2.0"),
    _fonts("fonts-ebgaramond", "EB Garamond", "serif", "opentype/ebgaramond/EBGaramond*.otf", "train"),
    _fonts("fonts-oldstandard", "Old Standard", "serif", "truetype/fonts-oldstandard/OldStandard-*.ttf", "train", "OFL-1.0"),
    _fonts("fonts-adf-baskervald", "Baskervald ADF", "serif", "truetype/adf/BaskervaldADF*.otf", "train", "GPL-2+ with font exception"),
    _fonts("fonts-dancingscript", "Dancing Script", "script", "opentype/dancingscript/DancingScript-*.otf", "train"),
    _fonts("fonts-lobster", "Lobster", "script", "opentype/lobster/lobster.otf", "train"),
    _fonts("fonts-kristi", "Kristi", "script", "truetype/kristi/Kristi.ttf", "train"),
    _fonts("fonts-dkg-handwriting", "DKG Handwriting", "script", "truetype/fifthhorseman/dkg*.ttf", "train", "GPL-3+ (sources also OFL-1.1)"),
    _fonts("fonts-comic-neue", "Comic Neue", "script", "opentype/comic-neue/ComicNeue-*.otf", "train"),
    _fonts("fonts-inconsolata", "Inconsolata", "mono", "truetype/inconsolata/Inconsolata.otf", "train", "OFL-1.0"),
    _fonts("fonts-cabin", "Cabin", "sans", "opentype/cabin/Cabin-*.otf", "heldout"),
    _fonts("fonts-play", "Play", "sans", "truetype/play/Play-*.ttf", "heldout"),
    _fonts("fonts-jura", "Jura", "sans", "opentype/jura/Jura-*.otf", "heldout", "GPL-3 or OFL-1.1"),
    _fonts("fonts-adf-switzera", "Switzera ADF", "sans", "truetype/adf/SwitzeraADF-*.otf", "heldout", "GPL-2+ with font exception"),
    _fonts("fonts-comfortaa", "Comfortaa", "display", "truetype/comfortaa/Comfortaa-*.ttf", "heldout"),
    _fonts("fonts-sil-gentium", "Gentium", "serif", "truetype/gentium/Gentium*.ttf", "heldout"),
    _fonts("fonts-fanwood", "Fanwood", "serif", "truetype/fanwood/Fanwood*.otf", "heldout", "MIT"),
    _fonts("fonts-goudybookletter", "Goudy Bookletter 1911", "serif", "opentype/sortsmill/GoudyBookletter1911.otf", "heldout", "public domain"),
    _fonts("fonts-adf-romande", "Romande ADF", "serif", "truetype/adf/RomandeADF*.otf", "heldout", "GPL-2+ with font exception"),
    _fonts("fonts-isabella", "Isabella", "script", "truetype/isabella/Isabella.ttf", "heldout", "LGPL-2+"),
    _fonts("fonts-femkeklaver", "Femkeklaver", "script", "truetype/femkeklaver/femkeklaver.ttf", "heldout", "CC-BY-SA-3.0"),
    _fonts("fonts-breip", "Breip", "script", "truetype/breip/Breip.ttf", "heldout", "OFL-1.0"),
    _fonts("fonts-anonymous-pro", "Anonymous Pro", "mono", "truetype/anonymous-pro/Anonymous Pro*.ttf", "heldout"),
)  # fmt: skip


@dataclass(frozen=True)
class MarkStyles:
    """A photo style set: the split its photos and fonts come from, and its logo shapes."""

    name: str
    role: Role
    logo_shapes: tuple[str, ...]
    opacity: tuple[float, float] = (0.1, 1.0)
    procedural_share: float = 0.15  # backgrounds drawn procedurally instead of from a photo

    def describe(self) -> str:
        """One line for reports: the photo sources, font families and logo shapes."""
        sources = ", ".join(source.name for source in photos.sources_for(self.role))
        families = ", ".join(source.family for source in FONT_SOURCES if source.role == self.role)
        low, high = self.opacity
        return f"{self.name} styles: photos {sources}; fonts {families}; logos {', '.join(self.logo_shapes)}; opacity {low:g}-{high:g}"


PHOTO_TRAIN_STYLES = MarkStyles("photo-train", "train", ("disc", "ring", "star", "badge", "rounded_rect", "polygon"))
PHOTO_HELDOUT_STYLES = MarkStyles("photo-heldout", "heldout", ("cross", "crescent", "arrow", "heart", "shield"))
MARK_STYLE_SETS = {styles.name: styles for styles in (PHOTO_TRAIN_STYLES, PHOTO_HELDOUT_STYLES)}

FAMILY_WEIGHTS = {
    "stock_tiled": 0.2, "centre_logo": 0.12, "signature": 0.1, "copyright_line": 0.1, "date_stamp": 0.06,
    "styled_text": 0.14, "stamp": 0.1, "multiline": 0.08, "coloured_logo": 0.1,
}  # fmt: skip
BRANDS = (
    "PhotoStock", "ImageBank", "stockvault", "PixelMarket", "Lumen Images", "FotoArchiv", "shotlane",
    "dreampix", "Agency Nord", "ViewFinder", "clearframe", "Bildwerk",
)  # fmt: skip
OWNERS = ("Jane Doe", "A. Weber", "Studio Nord", "M. Rossi", "Lumen Foto", "K. Tanaka", "Lea Martin", "O. Brandt")
WORDS = ("SAMPLE", "PREVIEW", "PROOF", "DRAFT", "COPY", "COMP", "NOT FOR SALE", "WATERMARK", "CONFIDENTIAL", "APPROVED")


class MissingFontsError(RuntimeError):
    """No font of a split role is installed on this machine."""


@dataclass(frozen=True)
class Matte:
    """A mark's exact matte (HxW float32 in 0..1, multiples of 1/65535) and colour layer (HxWx3 uint8)."""

    alpha: np.ndarray
    colour: np.ndarray

    def blend(self, clean: np.ndarray) -> np.ndarray:
        """``alpha * W + (1 - alpha) * clean``, rounded to uint8."""
        import numpy as np

        a = self.alpha[..., None].astype(np.float64)
        blended = a * self.colour + (1.0 - a) * clean
        return np.clip(np.rint(blended), 0, 255).astype(np.uint8)

    def alpha_png(self) -> np.ndarray:
        """The matte as the uint16 array saved to alpha/."""
        import numpy as np

        return np.rint(self.alpha * ALPHA_LEVELS).astype(np.uint16)

    @property
    def footprint(self) -> np.ndarray:
        """Where the mark changes the image at all: the exact binary mask."""
        return self.alpha > 0


@dataclass(frozen=True)
class MarkInfo:
    family: str
    fonts: tuple[str, ...]  # font file names
    logos: tuple[str, ...]
    opacity: float


@dataclass
class _Canvas:
    """Layers of one mark, bottom first, and what drew them."""

    rng: np.random.Generator
    size: int
    styles: MarkStyles
    layers: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (alpha HxW, colour (3,) or HxWx3)
    fonts: list[str] = field(default_factory=list)
    logos: list[str] = field(default_factory=list)

    def add(self, alpha: np.ndarray, colour: object) -> None:
        import numpy as np

        self.layers.append((alpha, np.asarray(colour, np.float32)))

    def font(self, kinds: tuple[FontKind, ...]) -> Path:
        by_kind = font_files(self.styles.role)
        pool = [path for kind in kinds for path in by_kind.get(kind, ())] or [p for paths in by_kind.values() for p in paths]
        path = pool[int(self.rng.integers(len(pool)))]
        self.fonts.append(path.name)
        return path

    def logo_shape(self) -> str:
        shape = self.styles.logo_shapes[int(self.rng.integers(len(self.styles.logo_shapes)))]
        self.logos.append(shape)
        return shape


def font_files(role: Role) -> dict[FontKind, list[Path]]:
    """Installed fonts of ``role`` by kind; :class:`MissingFontsError` names the packages when there are none."""
    found = _installed_fonts(role, str(photos.DEBIAN_ROOT))
    if not found:
        packages = " ".join(source.package for source in FONT_SOURCES if source.role == role)
        raise MissingFontsError(
            f"No {role} font is installed on this machine. Install them (apt-get install {packages}); "
            "`make install` does it (scripts/install-data-packages.sh)."
        )
    return found


@lru_cache(maxsize=8)
def _installed_fonts(role: Role, root: str) -> dict[FontKind, list[Path]]:
    found: dict[FontKind, list[Path]] = {}
    for source in FONT_SOURCES:
        if source.role == role:
            found.setdefault(source.kind, []).extend(source.files())
    return {kind: paths for kind, paths in found.items() if paths}


def draw_mark(rng: np.random.Generator, size: int, styles: MarkStyles) -> tuple[Matte, MarkInfo]:
    """One mark of a random family on a ``size`` x ``size`` canvas, its matte quantised as saved."""
    import numpy as np

    family = _choose(rng, FAMILY_WEIGHTS)
    for _ in range(8):
        canvas = _Canvas(rng, size, styles)
        _FAMILIES[family](canvas)
        alpha, colour = _flatten(canvas)
        if COVERAGE_RANGE[0] <= float((alpha >= MIN_ALPHA).mean()) <= COVERAGE_RANGE[1]:
            break
    if rng.random() < 0.5:  # hard edges: a binary shape
        alpha = np.where(alpha >= 0.5, 1.0, 0.0).astype(np.float32)
    elif rng.random() < 0.5:  # extra-soft edges
        alpha = _blur(alpha, float(rng.uniform(0.5, 1.5)))
    opacity = float(rng.uniform(*styles.opacity))
    alpha = alpha * opacity
    alpha = np.where(alpha >= MIN_ALPHA, alpha, 0.0)
    quantised = (np.rint(alpha * ALPHA_LEVELS) / ALPHA_LEVELS).astype(np.float32)
    colour = np.where(quantised[..., None] > 0, np.clip(np.rint(colour), 0, 255), 0).astype(np.uint8)
    info = MarkInfo(family=family, fonts=tuple(canvas.fonts), logos=tuple(canvas.logos), opacity=opacity)
    return Matte(alpha=quantised, colour=colour), info


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    total = sum(weights.values())
    return names[int(rng.choice(len(names), p=[weights[name] / total for name in names]))]


def _flatten(canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Over-composite the layers, bottom first: one alpha and the un-premultiplied colour."""
    import numpy as np

    size = canvas.size
    total = np.zeros((size, size), np.float32)
    premultiplied = np.zeros((size, size, 3), np.float32)
    for alpha, colour in canvas.layers:
        a = np.clip(alpha, 0.0, 1.0)[..., None]
        premultiplied = a * colour + (1.0 - a) * premultiplied
        total = a[..., 0] + (1.0 - a[..., 0]) * total
    colour = premultiplied / np.maximum(total, 1e-6)[..., None]
    return total, colour


# --- building blocks --------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _font(path: Path, pixels: int) -> ImageFont.FreeTypeFont:
    from PIL import ImageFont

    return ImageFont.truetype(str(path), pixels)


def _text(path: Path, pixels: int, text: str, *, rotation: float = 0.0, align: str = "center") -> np.ndarray:
    """Tight float32 alpha of (possibly multi-line) ``text``, anti-aliased, rotated."""
    import numpy as np
    from PIL import Image, ImageDraw

    font = _font(path, max(8, pixels))
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, align=align)
    pad = 2
    layer = Image.new("L", (math.ceil(right - left) + 2 * pad, math.ceil(bottom - top) + 2 * pad), 0)  # bbox may be fractional
    ImageDraw.Draw(layer).multiline_text((pad - left, pad - top), text, font=font, fill=255, align=align)
    if rotation:
        layer = layer.rotate(rotation, resample=Image.Resampling.BICUBIC, expand=True)
    return np.asarray(layer, np.float32) / 255.0


def _fitted_text(canvas: _Canvas, path: Path, pixels: int, text: str, *, share: float = 0.92, **options: object) -> np.ndarray:
    """:func:`_text`, shrunk once so that it fits in ``share`` of the canvas."""
    layer = _text(path, pixels, text, **options)  # type: ignore[arg-type]
    widest = max(layer.shape) / (canvas.size * share)
    if widest > 1:
        layer = _text(path, int(pixels / widest), text, **options)  # type: ignore[arg-type]
    return layer


def _logo(canvas: _Canvas, side: int, rotation: float = 0.0) -> np.ndarray:
    import numpy as np
    from PIL import Image, ImageDraw

    side = max(8, side)
    big = side * SUPERSAMPLE
    layer = Image.new("L", (big, big), 0)
    radius = big / 2 - SUPERSAMPLE
    ring = max(SUPERSAMPLE * 2, int(radius * canvas.rng.uniform(0.12, 0.25)))
    LOGO_DRAWERS[canvas.logo_shape()](ImageDraw.Draw(layer), canvas.rng, big / 2, radius, ring)
    layer = layer.reduce(SUPERSAMPLE)
    if rotation:
        layer = layer.rotate(rotation, resample=Image.Resampling.BICUBIC, expand=True)
    return np.asarray(layer, np.float32) / 255.0


def _beside(left: np.ndarray, right: np.ndarray, gap: int) -> np.ndarray:
    """Two layers side by side, centred vertically."""
    import numpy as np

    height = max(left.shape[0], right.shape[0])
    block = np.zeros((height, left.shape[1] + gap + right.shape[1]), np.float32)
    _paste(block, left, 0, (height - left.shape[0]) // 2)
    _paste(block, right, left.shape[1] + gap, (height - right.shape[0]) // 2)
    return block


def _above(top: np.ndarray, bottom: np.ndarray, gap: int) -> np.ndarray:
    """Two layers stacked, centred horizontally."""
    import numpy as np

    width = max(top.shape[1], bottom.shape[1])
    block = np.zeros((top.shape[0] + gap + bottom.shape[0], width), np.float32)
    _paste(block, top, (width - top.shape[1]) // 2, 0)
    _paste(block, bottom, (width - bottom.shape[1]) // 2, top.shape[0] + gap)
    return block


def _paste(canvas: np.ndarray, layer: np.ndarray, x: int, y: int) -> None:
    """Max-combine ``layer`` into ``canvas`` with its top-left at (x, y), clipped."""
    import numpy as np

    height, width = canvas.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + layer.shape[1], width), min(y + layer.shape[0], height)
    if x0 < x1 and y0 < y1:
        region = layer[y0 - y : y1 - y, x0 - x : x1 - x]
        np.maximum(canvas[y0:y1, x0:x1], region, out=canvas[y0:y1, x0:x1])


def _position(canvas: _Canvas, shape: tuple[int, ...], where: str, margin: float = 0.04) -> tuple[int, int]:
    """Top-left corner for a layer of ``shape`` at ``where``: centre, random, or an edge like 'bottom-right'."""
    size, rng = canvas.size, canvas.rng
    height, width = shape[:2]
    if where == "centre":
        jitter = size // 12
        return (size - width) // 2 + int(rng.integers(-jitter, jitter + 1)), (size - height) // 2 + int(rng.integers(-jitter, jitter + 1))
    if where == "random":
        return int(rng.integers(0, max(1, size - width) + 1)), int(rng.integers(0, max(1, size - height) + 1))
    gap = int(size * margin)
    vertical, horizontal = where.split("-")
    y = gap if vertical == "top" else size - gap - height
    x = {"left": gap, "right": size - gap - width, "centre": (size - width) // 2}[horizontal]
    return x, y


def _at(size: int, layer: np.ndarray, x: int, y: int) -> np.ndarray:
    """A full-size alpha holding ``layer`` with its top-left at (x, y)."""
    import numpy as np

    full = np.zeros((size, size), np.float32)
    _paste(full, layer, x, y)
    return full


def _placed(canvas: _Canvas, layer: np.ndarray, where: str, margin: float = 0.04) -> np.ndarray:
    return _at(canvas.size, layer, *_position(canvas, layer.shape, where, margin))


def _corner(rng: np.random.Generator, *, centre: bool = False) -> str:
    places = ["bottom-right", "bottom-left", "top-right", "top-left"] + (["bottom-centre"] if centre else [])
    return places[int(rng.integers(len(places)))]


def _blur(alpha: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(alpha, (0, 0), sigma)


def _shift(alpha: np.ndarray, dx: int, dy: int) -> np.ndarray:
    import numpy as np

    moved = np.zeros_like(alpha)
    height, width = alpha.shape
    moved[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = alpha[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return moved


def _dilate(alpha: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(alpha, kernel)


def _light_or_dark(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A main colour and the contrasting one for its outline or shadow."""
    pick = rng.random()
    if pick < 0.55:
        return (255, 255, 255), (0, 0, 0)
    if pick < 0.75:
        return (20, 20, 20), (255, 255, 255)
    grey = int(rng.integers(150, 230))
    return (grey, grey, grey), (30, 30, 30)


def _bright(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated brand colour."""
    import colorsys

    red, green, blue = colorsys.hsv_to_rgb(float(rng.random()), float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.7, 1.0)))
    return int(red * 255), int(green * 255), int(blue * 255)


def _styled(canvas: _Canvas, alpha: np.ndarray, colour: tuple[int, int, int], contrast: tuple[int, int, int], effect: str) -> None:
    """Add ``alpha`` in ``colour`` with an effect drawn under or around it: the layers of real styled text."""
    rng, size = canvas.rng, canvas.size
    offset = max(1, int(size * rng.uniform(0.003, 0.008)))
    if effect == "shadow":
        canvas.add(_shift(_blur(alpha, offset * 0.8), offset, offset) * float(rng.uniform(0.4, 0.8)), (0, 0, 0))
        canvas.add(alpha, colour)
    elif effect == "outline":
        canvas.add(_dilate(alpha, max(1, offset // 2 + 1)), contrast)
        canvas.add(alpha * float(rng.uniform(0.0, 1.0)) if rng.random() < 0.3 else alpha, colour)  # hollow letters too
    elif effect == "emboss":
        strength = float(rng.uniform(0.5, 0.9))
        canvas.add(_shift(alpha, offset, offset) * strength, (0, 0, 0))
        canvas.add(_shift(alpha, -offset, -offset) * strength, (255, 255, 255))
        canvas.add(alpha * float(rng.uniform(0.15, 0.4)), (128, 128, 128))
    elif effect == "glow":
        canvas.add(_blur(_dilate(alpha, offset), offset * 1.5) * float(rng.uniform(0.4, 0.8)), contrast)
        canvas.add(alpha, colour)
    else:
        canvas.add(alpha, colour)


EFFECTS = ("plain", "shadow", "outline", "emboss", "glow")


def _effect(rng: np.random.Generator, *, plain_share: float = 0.4) -> str:
    return "plain" if rng.random() < plain_share else EFFECTS[1 + int(rng.integers(len(EFFECTS) - 1))]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _url(owner: str) -> str:
    return "www." + owner.lower().replace(" ", "").replace(".", "") + ".com"


# --- families -------------------------------------------------------------------------------


def _stock_tiled(canvas: _Canvas) -> None:
    """Logo + name tiled on a diagonal grid, often with thin lines through it (stock agencies)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng, size = canvas.rng, canvas.size
    rotation = float(rng.choice([0.0, 30.0, -30.0, 45.0, -45.0, 20.0, -20.0]))
    pixels = int(size * rng.uniform(0.035, 0.07))
    name = _text(canvas.font(("sans", "display")), pixels, _pick(rng, BRANDS))
    block = _beside(_logo(canvas, int(pixels * 1.3)), name, max(2, pixels // 4)) if rng.random() < 0.7 else name
    block = np.asarray(Image.fromarray((block * 255).astype(np.uint8)).rotate(rotation, Image.Resampling.BICUBIC, expand=True), np.float32) / 255
    full = np.zeros((size, size), np.float32)
    step_x, step_y = int(block.shape[1] * rng.uniform(1.3, 2.2)), int(block.shape[0] * rng.uniform(1.6, 3.0))
    for row, y in enumerate(range(-int(rng.integers(step_y)), size, step_y)):
        for x in range(-int(rng.integers(step_x)) - (step_x // 2 if row % 2 else 0), size, step_x):
            _paste(full, block, x, y)
    colour, contrast = _light_or_dark(rng)
    if rng.random() < 0.6:  # thin lines at the tiles' angle, or a grid
        lines = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(lines)
        width, spacing = int(rng.integers(1, 3)), int(step_y * rng.choice([1.0, 0.5]))
        angles = [rotation] + ([rotation + 90.0] if rng.random() < 0.4 else [])
        for angle in angles:
            dx, dy = math.cos(math.radians(-angle)), math.sin(math.radians(-angle))
            for k in range(-2 * size // spacing - 2, 2 * size // spacing + 3):
                cx, cy = size / 2 - dy * k * spacing, size / 2 + dx * k * spacing
                draw.line([(cx - 2 * size * dx, cy - 2 * size * dy), (cx + 2 * size * dx, cy + 2 * size * dy)], fill=int(rng.integers(120, 256)), width=width)
        canvas.add(np.asarray(lines, np.float32) / 255 * float(rng.uniform(0.4, 0.9)), colour)
    _styled(canvas, full, colour, contrast, _effect(rng, plain_share=0.7))


def _centre_logo(canvas: _Canvas) -> None:
    """A large centred logo with the agency's name (and an image number) under it."""
    rng, size = canvas.rng, canvas.size
    logo = _logo(canvas, int(size * rng.uniform(0.2, 0.4)))
    pixels = int(size * rng.uniform(0.05, 0.09))
    block = _above(logo, _fitted_text(canvas, canvas.font(("sans", "display")), pixels, _pick(rng, BRANDS)), pixels // 3)
    if rng.random() < 0.4:
        number = _text(canvas.font(("sans",)), pixels // 2, f"Image ID {int(rng.integers(10**7, 10**9))}")
        block = _above(block, number, pixels // 4)
    colour, contrast = _light_or_dark(rng)
    _styled(canvas, _placed(canvas, block, "centre"), colour, contrast, _effect(rng))


def _signature(canvas: _Canvas) -> None:
    """A photographer's signature in script lettering, in a corner."""
    rng, size = canvas.rng, canvas.size
    owner = _pick(rng, OWNERS)
    text = _pick(rng, (owner, f"{owner} Photography", f"by {owner}", f"{owner}\nphotography"))
    layer = _fitted_text(canvas, canvas.font(("script",)), int(size * rng.uniform(0.05, 0.11)), text, share=0.6, rotation=float(rng.uniform(-8, 8)))
    colour, contrast = _light_or_dark(rng)
    _styled(canvas, _placed(canvas, layer, _corner(rng)), colour, contrast, _pick(rng, ("plain", "shadow", "shadow", "glow")))


def _copyright_line(canvas: _Canvas) -> None:
    """A small copyright line at an edge, sometimes on a translucent bar."""
    import numpy as np

    rng, size = canvas.rng, canvas.size
    owner, year = _pick(rng, OWNERS), int(rng.integers(1998, 2027))
    text = _pick(rng, (f"© {year} {owner}", f"© {owner} {year}. All rights reserved.", f"Copyright © {owner}", f"© {owner} | {_url(owner)}"))
    layer = _fitted_text(canvas, canvas.font(("sans", "serif")), int(size * rng.uniform(0.028, 0.05)), text, share=0.9)
    where = _pick(rng, ("bottom-left", "bottom-right", "bottom-centre", "top-left"))
    colour, contrast = _light_or_dark(rng)
    if rng.random() < 0.35:
        bar = np.zeros((size, size), np.float32)
        height = int(layer.shape[0] * 1.8)
        rows = slice(size - height, size) if where.startswith("bottom") else slice(0, height)
        bar[rows] = float(rng.uniform(0.3, 0.7))
        canvas.add(bar, contrast)
        _styled(canvas, _placed(canvas, layer, where, margin=(height - layer.shape[0]) / 2 / size), colour, contrast, "plain")
        return
    _styled(canvas, _placed(canvas, layer, where), colour, contrast, _pick(rng, ("plain", "shadow", "outline")))


def _date_stamp(canvas: _Canvas) -> None:
    """A camera's date imprint: orange digits in a bottom corner, often glowing."""
    rng, size = canvas.rng, canvas.size
    year, month, day = int(rng.integers(1990, 2027)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    text = _pick(rng, (f"'{year % 100:02d} {month} {day}", f"{year}/{month:02d}/{day:02d}", f"{day:02d}.{month:02d}.{year} {int(rng.integers(24)):02d}:{int(rng.integers(60)):02d}"))
    layer = _text(canvas.font(("mono",)), int(size * rng.uniform(0.035, 0.06)), text)
    colour = _pick(rng, ("orange", "yellow", "red"))
    rgb = {"orange": (255, 140, 30), "yellow": (255, 210, 40), "red": (240, 60, 40)}[colour]
    _styled(canvas, _placed(canvas, layer, _pick(rng, ("bottom-right", "bottom-left")), margin=0.05), rgb, (120, 40, 0), _pick(rng, ("plain", "glow")))


def _styled_text(canvas: _Canvas) -> None:
    """A large word with an outline, emboss, drop shadow or glow, placed anywhere, maybe rotated."""
    rng, size = canvas.rng, canvas.size
    rotation = float(rng.uniform(-45, 45)) if rng.random() < 0.5 else 0.0
    text = _pick(rng, WORDS + BRANDS)
    layer = _fitted_text(canvas, canvas.font(("sans", "display", "serif", "script")), int(size * rng.uniform(0.08, 0.2)), text, rotation=rotation)
    colour, contrast = _light_or_dark(rng)
    _styled(canvas, _placed(canvas, layer, _pick(rng, ("centre", "random"))), colour, contrast, _effect(rng, plain_share=0.15))


def _stamp(canvas: _Canvas) -> None:
    """A rubber stamp or badge: double ring or frame around a word, rotated, often worn."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng, size = canvas.rng, canvas.size
    word = _pick(rng, ("SAMPLE", "PROOF", "APPROVED", "COPY", "DRAFT", "PREVIEW"))
    font = canvas.font(("sans", "display", "serif"))
    text = _text(font, int(size * rng.uniform(0.07, 0.13)), word)
    pad = int(text.shape[0] * 0.6)
    ring = max(2, text.shape[0] // 8)
    if rng.random() < 0.5:  # round stamp with a star or the shape above and a line of text below
        diameter = int(max(text.shape[1] + 2 * pad, text.shape[0] * 4))
        frame = Image.new("L", (diameter, diameter), 0)
        draw = ImageDraw.Draw(frame)
        draw.ellipse([1, 1, diameter - 2, diameter - 2], outline=255, width=ring)
        draw.ellipse([ring * 2 + 2, ring * 2 + 2, diameter - ring * 2 - 3, diameter - ring * 2 - 3], outline=255, width=max(1, ring // 2))
        layer = np.asarray(frame, np.float32) / 255
        _paste(layer, text, (diameter - text.shape[1]) // 2, (diameter - text.shape[0]) // 2)
        emblem = _logo(canvas, text.shape[0])
        _paste(layer, emblem, (diameter - emblem.shape[1]) // 2, (diameter - text.shape[0]) // 2 - emblem.shape[0])
    else:  # rectangular frame
        height, width = text.shape[0] + 2 * pad, text.shape[1] + 2 * pad
        frame = Image.new("L", (width, height), 0)
        ImageDraw.Draw(frame).rounded_rectangle([1, 1, width - 2, height - 2], radius=int(pad * rng.uniform(0.0, 1.0)), outline=255, width=ring)
        layer = np.asarray(frame, np.float32) / 255
        _paste(layer, text, pad, pad)
    rotated = Image.fromarray((layer * 255).astype(np.uint8)).rotate(float(rng.uniform(-25, 25)), Image.Resampling.BICUBIC, expand=True)
    layer = np.asarray(rotated, np.float32) / 255
    if rng.random() < 0.5:  # worn ink: blotchy holes
        noise = _blur(rng.random(layer.shape).astype(np.float32), float(rng.uniform(1.0, 2.5)))
        layer = layer * (noise > np.quantile(noise, rng.uniform(0.15, 0.35)))
    if max(layer.shape) > size * 0.8:
        layer = np.asarray(Image.fromarray((layer * 255).astype(np.uint8)).reduce(2), np.float32) / 255
    rgb = _pick(rng, ("red", "blue", "white", "black"))
    colour = {"red": (200, 30, 40), "blue": (30, 60, 170), "white": (255, 255, 255), "black": (15, 15, 15)}[rgb]
    canvas.add(_placed(canvas, layer, _pick(rng, ("centre", "random"))), colour)


def _multiline(canvas: _Canvas) -> None:
    """Two to four lines of text: a word, the owner, a web address, an image number."""
    rng, size = canvas.rng, canvas.size
    owner = _pick(rng, OWNERS)
    lines = [_pick(rng, WORDS), owner, _url(owner), f"ID {int(rng.integers(10**5, 10**8))}"][: int(rng.integers(2, 5))]
    align = _pick(rng, ("center", "left"))
    layer = _fitted_text(canvas, canvas.font(("sans", "serif", "display")), int(size * rng.uniform(0.04, 0.08)), "\n".join(lines), align=align)
    colour, contrast = _light_or_dark(rng)
    _styled(canvas, _placed(canvas, layer, _pick(rng, ("centre", "random", _corner(rng)))), colour, contrast, _effect(rng, plain_share=0.5))


def _coloured_logo(canvas: _Canvas) -> None:
    """A brand's coloured logo beside its name in another colour."""
    import numpy as np

    rng, size = canvas.rng, canvas.size
    pixels = int(size * rng.uniform(0.04, 0.08))
    logo = _logo(canvas, int(pixels * rng.uniform(1.4, 2.2)))
    name = _fitted_text(canvas, canvas.font(("sans", "display", "serif")), pixels, _pick(rng, BRANDS), share=0.6)
    gap = max(2, pixels // 3)
    height = max(logo.shape[0], name.shape[0])
    left = np.zeros((height, logo.shape[1] + gap + name.shape[1]), np.float32)
    right = np.zeros_like(left)
    _paste(left, logo, 0, (height - logo.shape[0]) // 2)
    _paste(right, name, logo.shape[1] + gap, (height - name.shape[0]) // 2)
    x, y = _position(canvas, left.shape, _pick(rng, ("centre", "random", _corner(rng, centre=True))))
    canvas.add(_at(size, left, x, y), _bright(rng))
    canvas.add(_at(size, right, x, y), ((255, 255, 255), (40, 40, 40), _bright(rng))[int(rng.integers(3))])


_FAMILIES = {
    "stock_tiled": _stock_tiled,
    "centre_logo": _centre_logo,
    "signature": _signature,
    "copyright_line": _copyright_line,
    "date_stamp": _date_stamp,
    "styled_text": _styled_text,
    "stamp": _stamp,
    "multiline": _multiline,
    "coloured_logo": _coloured_logo,
}
