"""Builders for the removal tests: watermarked images, hostile archives and tiny detectors.

Everything is built on the fly in a temporary folder; nothing is downloaded.

* :func:`watermarked_jpeg` and friends draw near-white text on a mid-tone background;
* :func:`white_mark_detector` is a real :class:`clearmark.model.detector.Detector` whose
  network marks near-white pixels, so tests know exactly where the "watermark" is;
* :func:`build_corpus` writes one archive per hostile or broken case with the outcome
  the pipeline must reach (``failed`` with a reason, or ``partial`` with member errors).
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


# --- images ----------------------------------------------------------------------------------
def watermarked_rgb(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """Mid-tone noise (never near white) with a pure-white bar in the top-left quarter."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
    rgb[height // 8 : height // 4, width // 8 : width // 2] = 255
    return rgb


def clean_rgb(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """Mid-tone noise with no white pixels: the white-mark detector finds nothing."""
    rng = np.random.default_rng(seed)
    return rng.integers(40, 200, (height, width, 3), dtype=np.uint8)


def encode(rgb: np.ndarray, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **params)
    return buffer.getvalue()


def watermarked_jpeg(height: int = 64, width: int = 64, seed: int = 0, quality: int = 90) -> bytes:
    return encode(watermarked_rgb(height, width, seed), "JPEG", quality=quality)


def huge_dimension_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    data = bytearray(encode(np.zeros((1, 1, 3), np.uint8), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR CRC over type + payload
    return bytes(data)


def corrupt_jpeg() -> bytes:
    """A JPEG cut in the middle of its entropy-coded data."""
    data = watermarked_jpeg(128, 128)
    return data[: len(data) // 2]


# --- detectors -------------------------------------------------------------------------------
def white_mark_detector(level: float = 0.93):
    """A real Detector whose network says 'watermark' where all channels exceed ``level``."""
    import torch

    from clearmark.model.detector import IMAGENET_MEAN, IMAGENET_STD, Detector, DetectorConfig

    class WhiteMarks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rgb = x * self.std + self.mean  # undo the detector's normalisation
            return (rgb.min(dim=1, keepdim=True).values - level) * 200.0

    return Detector(WhiteMarks(), DetectorConfig(image_size=64), version="white-marks")


def tiny_detector_folder(out_dir: Path, *, finds_everything: bool) -> Path:
    """A saved smp detector (random mit_b0) whose head bias makes it find everything or nothing."""
    import torch

    from clearmark.model.detector import DetectorConfig, build_network, save_detector

    torch.manual_seed(0)
    config = DetectorConfig(image_size=64)
    network = build_network(config)
    head = network.segmentation_head[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(20.0 if finds_everything else -20.0)
    return save_detector(network, config, out_dir)


# --- archives --------------------------------------------------------------------------------
@dataclass
class Case:
    """One corpus entry and the outcome the pipeline must reach."""

    name: str
    path: Path
    outcome: str  # "failed" or "partial"
    reason: str  # substring of the failure reason or of a member error
    escape: list[Path] = field(default_factory=list)  # paths that must not exist afterwards


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _tar(path: Path, infos: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in infos:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def encrypted_zip(path: Path, good: bytes) -> Path:
    """A zip whose second member carries the 'encrypted' flag (bit 0) in both headers."""
    _zip(path, {"ok.jpg": good, "secret.jpg": good})
    data = bytearray(path.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        position = data.find(signature, data.find(signature) + 1)  # the second header of each kind
        data[position + flag_offset] |= 0x01
    path.write_bytes(bytes(data))
    return path


def build_corpus(root: Path, outside: Path) -> list[Case]:
    """Write every hostile or broken case under ``root``; ``outside`` is where escapes would land."""
    root.mkdir(parents=True, exist_ok=True)
    good = watermarked_jpeg()
    escape_rel = outside / "zip-slip.txt"
    depth = len(root.resolve().parts) + 2  # enough ".." to climb from any output folder to /
    absolute = outside / "absolute.txt"
    cases = [
        Case("zip-slip", _zip(root / "zip-slip.zip", {"ok.jpg": good, "../" * depth + str(escape_rel).lstrip("/"): b"x"}),
             "failed", "path traversal", [escape_rel]),
        Case("tar-slip", _tar(root / "tar-slip.tar", [_file("ok.jpg", good), _file("../../tar-slip.txt", b"x")]),
             "failed", "path traversal", [root.parent / "tar-slip.txt"]),
        Case("absolute-path", _tar(root / "absolute.tar.gz", [_file("ok.jpg", good), _file(str(absolute), b"x")], "w:gz"),
             "failed", "absolute path", [absolute]),
        Case("symlink", _tar(root / "symlink.tar", [_file("ok.jpg", good), _link("evil.jpg", str(outside / "target"), tarfile.SYMTYPE)]),
             "partial", "symbolic link", [outside / "target"]),
        Case("hard-link", _tar(root / "hardlink.tgz", [_file("ok.jpg", good), _link("hl.jpg", "/etc/passwd", tarfile.LNKTYPE)], "w:gz"),
             "partial", "hard link"),
        Case("device", _tar(root / "device.tar", [_file("ok.jpg", good), _link("dev", "", tarfile.CHRTYPE), _link("fifo", "", tarfile.FIFOTYPE)]),
             "partial", "special file"),
        Case("zip-bomb", _zip(root / "bomb.zip", {"ok.jpg": good, "zeros.bin": bytes(32 * 1024 * 1024)}),
             "failed", "zip bomb"),
        Case("truncated-zip", _truncate(_zip(root / "truncated.zip", {f"{i}.jpg": good for i in range(4)})),
             "failed", "truncated or corrupt zip"),
        Case("truncated-tgz", _truncate(_tar(root / "truncated.tar.gz", [_file(f"{i}.png", encode(clean_rgb(256, 256, i), "PNG")) for i in range(4)], "w:gz")),
             "failed", "truncated or corrupt"),
        Case("encrypted-zip", encrypted_zip(root / "encrypted.zip", good), "partial", "encrypted member"),
        Case("empty-zip", _zip(root / "empty.zip", {}), "failed", "empty"),
        Case("empty-tar", _tar(root / "empty.tar", []), "failed", "empty"),
        Case("not-an-archive", _write(root / "notes.zip", b"these are not the photos you are looking for\n" * 20),
             "failed", "not a zip, tar or tar.gz"),
        Case("huge-dimension", _zip(root / "huge.zip", {"ok.jpg": good, "huge.png": huge_dimension_png()}), "partial", "MP limit"),
        Case("corrupt-jpeg", _zip(root / "corrupt.zip", {"ok.jpg": good, "broken.jpg": corrupt_jpeg()}), "partial", "corrupt or truncated"),
        Case("garbage-jpeg", _zip(root / "garbage.zip", {"ok.jpg": good, "garbage.jpg": os.urandom(2000)}), "partial", "not a readable image"),
    ]  # fmt: skip
    return cases


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
