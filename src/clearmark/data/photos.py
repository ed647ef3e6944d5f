"""Real photographs for synthetic backgrounds: which sources, which split, and crops of them.

Every source installs offline: a Debian package (``make install`` runs
``scripts/install-data-packages.sh``) or a pip package already in the pinned set.  Each has
a split role:

``train``     backgrounds of training data;
``heldout``   backgrounds of the bench's held-out set: real photographs too, from sources
              that training never uses;
``reserved``  kept for an independent evaluation: used by neither, declared here so that a
              test can check that no source or font list ever picks them up.

:func:`photo_crop` turns a few dozen photographs into thousands of distinct backgrounds:
square crops at many scales (256-2048 px of the original), positions and mirrorings, the
same for the same random state.  :func:`folder_photos` makes a user's own folder of clean
photos a source ("synthetic marks on my photos").
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

Role = Literal["train", "heldout", "reserved"]
ROLES: tuple[Role, ...] = ("train", "heldout", "reserved")

# Never used for training nor for the bench's held-out set: an independent evaluation draws
# its photographs and fonts from them.  (fonts-liberation, the same typefaces as
# fonts-liberation2, is not used either.)
RESERVED_PACKAGES = frozenset({"plasma-workspace-wallpapers", "fonts-liberation2", "fonts-freefont-ttf", "fonts-urw-base35"})

DEBIAN_ROOT = Path("/")  # where Debian packages put their files; tests point it elsewhere
CROP_SIDES = (256, 2048)  # side of a crop in pixels of the original photograph


@dataclass(frozen=True)
class PhotoSource:
    """One package's photographs: where they are once installed, and which split they serve."""

    name: str
    package: str  # the Debian or pip package that ships them
    installer: Literal["debian", "pip"]
    patterns: tuple[str, ...]  # globs relative to the install root: / for Debian, the module's folder for pip
    role: Role
    licence: str

    def root(self) -> Path | None:
        """Folder the patterns are relative to, or None when the package is not installed."""
        if self.installer == "debian":
            return DEBIAN_ROOT
        spec = importlib.util.find_spec(self.package)  # find, not import: these modules are slow to import
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations)))

    def files(self) -> list[Path]:
        """This source's photographs on this machine, sorted (empty when it is not installed)."""
        root = self.root()
        if root is None:
            return []
        return sorted({path for pattern in self.patterns for path in root.glob(pattern) if path.is_file()})

    def install_hint(self) -> str:
        if self.installer == "debian":
            return f"apt-get install {self.package}"
        return f"pip install {self.package}"


_MATE = "usr/share/backgrounds/mate/nature/"
_LOMIRI = "usr/share/backgrounds/"
# Only the photographs of each package: its abstract renders, logos and gradients are left out.
PHOTO_SOURCES = (
    PhotoSource(
        "lomiri-16.04", "lomiri-wallpapers-16.04", "debian",
        tuple(_LOMIRI + name for name in (
            "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
            "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
            "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg", "greentock_by_Peter_Nerlich.jpg",
            "life_by_Aitzol_Berasategi.jpg", "picosdeeuropa_by_Aitzol_Berasategi.jpg",
            "seeding_by_Clements_Engelhardt.jpg", "sunset_by_Aitzol_Berasategi.jpg",
        )),
        "train", "CC-BY-4.0 / CC-BY-SA-4.0 / CC0-1.0 (per photo, see the package's copyright file)",
    ),
    PhotoSource(
        "scikit-image", "skimage", "pip",
        tuple("data/" + name for name in (
            "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "camera.png",
            "brick.png", "grass.png", "gravel.png", "moon.png", "coins.png", "hubble_deep_field.jpg", "retina.jpg",
        )),
        "train", "public domain / CC0 / CC-BY (per image, see skimage.data)",
    ),
    PhotoSource(
        "scikit-learn", "sklearn", "pip", ("datasets/images/china.jpg", "datasets/images/flower.jpg"),
        "train", "CC-BY-2.0",
    ),
    PhotoSource(
        "mate-nature", "mate-backgrounds", "debian",
        tuple(_MATE + name for name in (
            "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg", "LadyBird.jpg",
            "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg",
        )),
        "heldout", "GPL-2+",
    ),
    PhotoSource(
        "lomiri-20.04", "lomiri-wallpapers-20.04", "debian", (_LOMIRI + "Kleiber_by_Lukas_Baubkus.jpg",),
        "heldout", "CC-BY-SA-3.0",
    ),
    PhotoSource(
        "matplotlib", "matplotlib", "pip", ("mpl-data/sample_data/grace_hopper.jpg",), "heldout", "public domain",
    ),
    PhotoSource(
        "plasma", "plasma-workspace-wallpapers", "debian", ("usr/share/wallpapers/*/contents/images/*",),
        "reserved", "LGPL-3 / CC-BY-SA (per wallpaper)",
    ),
)  # fmt: skip
SOURCES_BY_NAME = {source.name: source for source in PHOTO_SOURCES}


class MissingPhotosError(RuntimeError):
    """No photograph of a split role is installed on this machine."""


def sources_for(role: Role) -> tuple[PhotoSource, ...]:
    return tuple(source for source in PHOTO_SOURCES if source.role == role)


def photo_files(role: Role) -> dict[str, list[Path]]:
    """Photographs of ``role`` on this machine, by source name (sources with none are left out).

    Raises :class:`MissingPhotosError`, naming the packages to install, when the role has none.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)} (got {role!r}).")
    found = {source.name: files for source in sources_for(role) if (files := source.files())}
    if not found:
        hints = "; ".join(source.install_hint() for source in sources_for(role))
        raise MissingPhotosError(
            f"No {role} photograph is installed on this machine. Install its sources ({hints}); "
            "`make install` does it for the train and heldout ones (scripts/install-data-packages.sh)."
        )
    return found


def folder_photos(folder: Path) -> list[Path]:
    """The user's own clean photographs in ``folder`` (recursively, sorted): backgrounds for
    "synthetic marks on my photos"."""
    from clearmark.data.images import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPhotosError(f"{folder} is not a folder: give the folder that holds your clean photos.")
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MissingPhotosError(f"{folder} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}): add clean photos to it.")
    return files


def photo_crop(rng: np.random.Generator, files: list[Path], size: int) -> tuple[np.ndarray, Path]:
    """A ``size`` x ``size`` RGB uint8 crop of one of ``files``, and the file it came from.

    The crop's side in the original is drawn log-uniformly in :data:`CROP_SIDES` (never below
    ``size``, never above the photo's short side), so one photograph gives close-ups and wide
    views alike; its position and a mirroring are drawn too.  JPEGs are decoded at a reduced
    scale when the crop is much larger than ``size`` (Pillow's draft mode), which is exact
    and deterministic.
    """
    import numpy as np
    from PIL import Image

    path = files[int(rng.integers(len(files)))]
    with Image.open(path) as opened:
        width, height = opened.size
        short = min(width, height)
        low, high = min(short, max(CROP_SIDES[0], size)), min(short, CROP_SIDES[1])
        side = round(math.exp(rng.uniform(math.log(low), math.log(high)))) if high > low else low
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        mirror = bool(rng.random() < 0.5)
        opened.draft("RGB", (max(1, width * size // side), max(1, height * size // side)))
        scale = opened.size[0] / width  # 1, 1/2, 1/4 or 1/8 after a JPEG draft
        box = (left * scale, top * scale, (left + side) * scale, (top + side) * scale)
        # EXIF orientation is not applied: a photo on its side is as good a background.
        crop = opened.convert("RGB").resize((size, size), Image.Resampling.LANCZOS, box=box)
    array = np.asarray(crop)
    return np.ascontiguousarray(array[:, ::-1] if mirror else array), path
