"""Safe, streaming reading and writing of archives and folders.

Readers validate the whole member list before any member is processed:

* whole-archive failures (:class:`ArchiveError`): not an archive, truncated or corrupt,
  empty, a member path that escapes the output (``..``, absolute paths, drive letters),
  too many members, too many uncompressed bytes, a zip member whose compression ratio
  marks a zip bomb;
* per-member rejections (``Member.error``, the rest of the archive is processed):
  symlinks, hard links, device files and FIFOs, encrypted zip members, duplicate paths.

Members are read one at a time (``Member.open`` streams from the archive file), so an
archive is never held in memory.  Writers write to ``<output>.partial`` and rename it
into place only when every member was written, so a failed run leaves no half output.
They never delete what they did not write: :func:`check_output` refuses an existing
output unless told to overwrite it, and a folder output then only gains or replaces the
files of this run.
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

from clearmark.errors import ClearmarkError
from clearmark.settings import Settings

ArchiveKind = Literal["folder", "zip", "tar", "tar.gz"]

# Longest suffix first, so that "x.tar.gz" is a tar.gz and not a ".gz".
ARCHIVE_SUFFIXES: dict[str, ArchiveKind] = {".tar.gz": "tar.gz", ".tgz": "tar.gz", ".zip": "zip", ".tar": "tar"}

# Members below this size may compress extremely well without being a threat.
_RATIO_MIN_BYTES = 1024 * 1024
# Formats that are already compressed: storing them in a zip is faster and no larger.
_STORED_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gz", ".zip", ".mp4", ".mov"}


class ArchiveError(ClearmarkError, ValueError):
    """The archive as a whole cannot be processed safely; the message says why and what to do."""


class OutputExistsError(ClearmarkError):
    """The output path holds something this run did not write; the message says what to do."""


def _setting_default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class Limits:
    """Caps that stop hostile or runaway archives before anything is extracted (defaults: the settings')."""

    max_total_bytes: int = _setting_default("removal_max_total_bytes")
    max_members: int = _setting_default("removal_max_members")
    max_ratio: float = _setting_default("removal_max_ratio")
    max_image_pixels: int = _setting_default("max_image_pixels")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_total_bytes=settings.removal_max_total_bytes,
            max_members=settings.removal_max_members,
            max_ratio=settings.removal_max_ratio,
            max_image_pixels=settings.max_image_pixels,
        )


@dataclass
class Member:
    """One entry of an archive or folder.  ``open`` is valid only while the reader is open."""

    path: str
    size: int
    is_dir: bool = False
    mtime: float = 0.0
    mode: int = 0o644
    error: str | None = None
    _opener: Callable[[], IO[bytes]] | None = None

    def open(self) -> IO[bytes]:
        if self._opener is None:
            raise ValueError(f"member {self.path!r} cannot be read: {self.error}")
        return self._opener()


def kind_from_name(path: str | Path) -> ArchiveKind | None:
    """Archive kind from a file name (``None`` for a name without an archive suffix)."""
    name = str(path).lower().rstrip("/")
    for suffix, kind in ARCHIVE_SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return None


def output_kind(path: Path) -> ArchiveKind:
    """Kind of an output path: its archive suffix, otherwise a folder."""
    return kind_from_name(path) or "folder"


def requested_output_kind(path: Path) -> ArchiveKind:
    """Kind of an output path a person typed: an archive suffix, or a folder (a name without
    a suffix, or an existing folder); :class:`ArchiveError` for any other suffix (``out.rar``)."""
    path = Path(path)
    kind = kind_from_name(path)
    if kind is not None:
        return kind
    if path.is_dir() or not path.suffix:
        return "folder"
    raise ArchiveError(
        f"OUTPUT {path.name} ends in {path.suffix}, which is not a format clearmark writes. Name an archive "
        f"({', '.join(sorted(ARCHIVE_SUFFIXES))}) or a folder without a suffix (or create that folder first)."
    )


def check_output(path: Path, *, folder: bool, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` unless a run may write ``path`` (a folder or a file).

    Nothing there, or an empty folder, is always fine.  An existing file is replaced only
    with ``overwrite``; an existing folder with files is written into only with
    ``overwrite``, and then keeps every file the run does not write.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if folder != path.is_dir():
        what = "a folder" if path.is_dir() else "a file"
        raise OutputExistsError(f"{path} is {what}, so the output cannot be written there; choose another OUTPUT.")
    if overwrite or (folder and not any(path.iterdir())):
        return
    held = "already holds files" if folder else "already exists"
    kept = " (files in it that this run does not write stay)" if folder else ""
    raise OutputExistsError(f"{path} {held}; choose a new OUTPUT, or pass --overwrite to replace what this run writes{kept}.")


def safe_relative_path(name: str) -> str:
    """Normalise an archive member name to a relative POSIX path, or raise :class:`ArchiveError`.

    Backslashes count as separators (archives made on Windows), so ``..\\x`` is caught too.
    """
    if "\x00" in name:
        raise ArchiveError(f"hostile archive: member name {name!r} contains a NUL byte")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise ArchiveError(
            f"hostile archive: member {name!r} has an absolute path; re-create the archive with relative paths"
        )
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(
            f"hostile archive: member {name!r} points outside the archive folder (path traversal, 'zip-slip')"
        )
    if not parts:
        raise ArchiveError(f"archive member with an empty name ({name!r})")
    return posixpath.join(*parts)


def detect_kind(path: Path) -> ArchiveKind:
    """Kind of an input by its content (not its name); :class:`ArchiveError` if it is none."""
    if path.is_dir():
        return "folder"
    if not path.is_file():
        raise ArchiveError(f"input {path} does not exist or is not a regular file")
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.startswith(b"PK\x03\x04"):
        raise ArchiveError(f"{path.name} is a truncated or corrupt zip (no central directory); upload it again")
    if head and not head.strip(b"\x00"):
        raise ArchiveError(f"{path.name} is an empty tar archive: it holds no files to process")
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    raise ArchiveError(
        f"{path.name} is not a zip, tar or tar.gz archive (or it is truncated); upload a .zip, .tar, .tar.gz or .tgz"
    )


class _Budget:
    """Counts members and declared bytes while scanning; raises as soon as a cap is passed."""

    def __init__(self, limits: Limits, name: str) -> None:
        self.limits, self.name = limits, name
        self.members = 0
        self.total = 0
        self.seen: set[str] = set()

    def add(self, member: Member) -> Member:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(
                f"{self.name} has more than {self.limits.max_members} members; split it or raise CLEARMARK_REMOVAL_MAX_MEMBERS"
            )
        self.total += member.size
        if self.total > self.limits.max_total_bytes:
            raise ArchiveError(
                f"{self.name} expands to more than {self.limits.max_total_bytes} bytes; split it or raise "
                "CLEARMARK_REMOVAL_MAX_TOTAL_BYTES"
            )
        if member.path in self.seen and member.error is None:
            member.error = "duplicate path in the archive: only the first entry is kept"
            member._opener = None
        self.seen.add(member.path)
        return member


class ArchiveReader:
    """Validated, streaming view of a zip, tar, tar.gz or folder (use as a context manager)."""

    def __init__(self, path: Path, limits: Limits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or Limits()
        self.kind: ArchiveKind = detect_kind(self.path)
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self.members: list[Member] = []

    def __enter__(self) -> ArchiveReader:
        try:
            scan = {"zip": self._scan_zip, "folder": self._scan_folder}.get(self.kind, self._scan_tar)
            self.members = list(scan())
        except BaseException:
            self.close()
            raise
        if not any(not m.is_dir for m in self.members):
            self.close()
            raise ArchiveError(f"{self.path.name} is empty: it holds no files to process")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in (self._zip, self._tar):
            if handle is not None:
                handle.close()

    # --- zip ------------------------------------------------------------------------------
    def _scan_zip(self) -> Iterator[Member]:
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.path.name} is a corrupt or truncated zip ({exc}); upload it again") from exc
        budget = _Budget(self.limits, self.path.name)
        for info in infos:
            member = Member(
                path=safe_relative_path(info.filename),
                size=info.file_size,
                is_dir=info.is_dir(),
                mtime=datetime(*info.date_time).timestamp(),
                mode=(info.external_attr >> 16) & 0o777 or 0o644,
            )
            if (
                info.file_size > _RATIO_MIN_BYTES
                and info.file_size / max(info.compress_size, 1) > self.limits.max_ratio
            ):
                raise ArchiveError(
                    f"{self.path.name} looks like a zip bomb: member {info.filename!r} expands "
                    f"{info.file_size / max(info.compress_size, 1):.0f}x (limit {self.limits.max_ratio:.0f}x)"
                )
            file_type = stat.S_IFMT(info.external_attr >> 16)
            if file_type == stat.S_IFLNK:
                member.error = "symbolic link: links are not extracted for safety"
            elif file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                member.error = "special file (device, FIFO or socket): not extracted for safety"
            elif info.flag_bits & 0x1:
                member.error = "encrypted member: password-protected files are not supported; re-create the archive without a password"
            elif not member.is_dir:
                member._opener = _zip_opener(self._zip, info)
            yield budget.add(member)

    # --- tar ------------------------------------------------------------------------------
    def _scan_tar(self) -> Iterator[Member]:
        try:
            self._tar = tarfile.open(self.path, "r:*")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.path.name} is not a readable tar archive ({exc})") from exc
        budget = _Budget(self.limits, self.path.name)
        while True:
            # next() reads one header at a time, so the caps stop a bomb before its data is read.
            try:
                info = self._tar.next()
            except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
                raise ArchiveError(f"{self.path.name} is truncated or corrupt ({exc}); upload it again") from exc
            if info is None:
                break
            member = Member(
                path=safe_relative_path(info.name),
                size=info.size if info.isreg() else 0,
                is_dir=info.isdir(),
                mtime=float(info.mtime),
                mode=info.mode & 0o777,
            )
            if info.issym():
                member.error = "symbolic link: links are not extracted for safety"
            elif info.islnk():
                member.error = "hard link: links are not extracted for safety"
            elif not (info.isreg() or info.isdir()):
                member.error = "special file (device, FIFO or socket): not extracted for safety"
            elif info.isreg():
                member._opener = _tar_opener(self._tar, info)
            yield budget.add(member)

    # --- folder ---------------------------------------------------------------------------
    def _scan_folder(self) -> Iterator[Member]:
        budget = _Budget(self.limits, self.path.name)
        for entry in sorted(self.path.rglob("*")):
            rel = entry.relative_to(self.path).as_posix()
            st = entry.lstat()
            member = Member(path=rel, size=0, mtime=st.st_mtime, mode=st.st_mode & 0o777)
            if stat.S_ISLNK(st.st_mode):
                member.error = "symbolic link: links are not followed for safety"
            elif stat.S_ISDIR(st.st_mode):
                member.is_dir = True
            elif stat.S_ISREG(st.st_mode):
                member.size = st.st_size
                member._opener = _file_opener(entry)
            else:
                member.error = "special file (device, FIFO or socket): not read for safety"
            yield budget.add(member)


def _zip_opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    return lambda: archive.open(info)


def _tar_opener(archive: tarfile.TarFile, info: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
    def open_member() -> IO[bytes]:
        handle = archive.extractfile(info)
        if handle is None:  # not a regular file; the scan only gives openers to regular files
            raise ValueError(f"{info.name} is not a regular file")
        return handle

    return open_member


def _file_opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: open(path, "rb")


class ArchiveWriter:
    """Writes members to a zip, tar, tar.gz or folder; atomic via ``<output>.partial``."""

    def __init__(self, path: Path, kind: ArchiveKind | None = None) -> None:
        self.path = Path(path)
        self.kind: ArchiveKind = kind or output_kind(self.path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self._remove(self.partial)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._written: set[str] = set()
        if self.kind == "zip":
            self._zip = zipfile.ZipFile(self.partial, "w", allowZip64=True)
        elif self.kind == "folder":
            self.partial.mkdir(parents=True)
        else:
            self._tar = tarfile.open(self.partial, "w:gz" if self.kind == "tar.gz" else "w", format=tarfile.PAX_FORMAT)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def add_dir(self, rel: str, mtime: float = 0.0) -> None:
        rel = safe_relative_path(rel)
        if self._zip is not None:
            self._zip.writestr(zipfile.ZipInfo(rel + "/", _zip_time(mtime)), b"")
        elif self._tar is not None:
            info = tarfile.TarInfo(rel)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(mtime)
            self._tar.addfile(info)
        else:
            self._target(rel).mkdir(parents=True, exist_ok=True)

    def add_file(self, rel: str, source: IO[bytes] | bytes, *, size: int | None = None, mtime: float = 0.0, mode: int = 0o644) -> None:
        """Write one file.  ``source`` is bytes or a binary stream (then ``size`` is required for tar)."""
        import io

        rel = safe_relative_path(rel)
        if rel in self._written:
            raise ValueError(f"{rel} was already written to {self.path.name}")
        self._written.add(rel)
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        if self._zip is not None:
            info = zipfile.ZipInfo(rel, _zip_time(mtime))
            info.external_attr = (stat.S_IFREG | (mode or 0o644)) << 16
            suffix = posixpath.splitext(rel)[1].lower()
            info.compress_type = zipfile.ZIP_STORED if suffix in _STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            with self._zip.open(info, "w", force_zip64=(size or 0) > 2**31) as out:
                shutil.copyfileobj(stream, out, 1024 * 1024)
        elif self._tar is not None:
            info = tarfile.TarInfo(rel)
            info.size = len(source) if isinstance(source, bytes) else int(size if size is not None else _remaining(stream))
            info.mtime, info.mode = int(mtime), mode or 0o644
            self._tar.addfile(info, stream)
        else:
            target = self._target(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as out:  # "x": never overwrite, never follow an existing link
                shutil.copyfileobj(stream, out, 1024 * 1024)

    def commit(self) -> Path:
        """Close the output and move it into place.

        An archive replaces a file of the same name; a folder is moved into an existing
        folder file by file, so files this run did not write stay.
        """
        self._close()
        if self.kind == "folder" and self.path.is_dir():
            _move_files_into(self.partial, self.path)
            shutil.rmtree(self.partial)  # only its emptied folders are left
        else:
            self.partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial output."""
        try:
            self._close()
        finally:
            self._remove(self.partial)

    def _close(self) -> None:
        for handle in (self._zip, self._tar):
            if handle is not None:
                handle.close()
        self._zip = self._tar = None

    def _target(self, rel: str) -> Path:
        root = self.partial.resolve()
        target = (root / rel).resolve()
        if not target.is_relative_to(root):  # defence in depth: rel was already normalised
            raise ArchiveError(f"refusing to write {rel!r} outside {self.path}")
        return target

    @staticmethod
    def _remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _move_files_into(source: Path, target: Path) -> None:
    """Move every file below ``source`` to the same relative path below ``target``."""
    for path in sorted(source.rglob("*")):
        if path.is_dir():
            continue
        destination = target / path.relative_to(source)
        if destination.is_dir() and not destination.is_symlink():
            raise OutputExistsError(f"{destination} is a folder, so the output file cannot replace it; choose another OUTPUT.")
        destination.parent.mkdir(parents=True, exist_ok=True)
        path.replace(destination)  # replaces a link itself, never what it points to


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    stamp = datetime.fromtimestamp(mtime) if mtime else datetime.now()
    # Zip timestamps cannot encode years before 1980.
    return (max(stamp.year, 1980), stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)


def _remaining(stream: IO[bytes]) -> int:
    position = stream.tell()
    end = stream.seek(0, 2)
    stream.seek(position)
    return end - position
