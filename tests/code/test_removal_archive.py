"""Archive primitives: path normalisation, kind detection, atomic writers."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from clearmark.removal.archive import ArchiveError, ArchiveReader, ArchiveWriter, Limits, detect_kind, kind_from_name, safe_relative_path
from clearmark.settings import Settings


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a/b.jpg", "a/b.jpg"), ("./a//b.jpg", "a/b.jpg"), ("a\\b.jpg", "a/b.jpg"), ("dir/", "dir")],
)
def test_safe_relative_path_normalises(name, expected):
    assert safe_relative_path(name) == expected


@pytest.mark.parametrize(
    ("name", "reason"),
    [("../x", "path traversal"), ("a/../../x", "path traversal"), ("..\\x", "path traversal"), ("/etc/passwd", "absolute path"),
     ("C:\\x.jpg", "absolute path"), ("a\x00b", "NUL"), ("./", "empty name")],
)  # fmt: skip
def test_safe_relative_path_rejects_escapes(name, reason):
    with pytest.raises(ArchiveError, match=reason):
        safe_relative_path(name)


def test_kind_from_name_and_content(tmp_path):
    assert [kind_from_name(n) for n in ("a.ZIP", "a.tar", "a.tar.gz", "a.tgz", "a.gz", "folder/")] == ["zip", "tar", "tar.gz", "tar.gz", None, None]
    zipped = tmp_path / "misnamed.tar"  # content wins over the name
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("a.txt", "a")
    assert detect_kind(zipped) == "zip" and detect_kind(tmp_path) == "folder"


@pytest.mark.parametrize("name", ["out.zip", "out.tar", "out.tar.gz", "out"])
def test_writer_is_atomic_and_round_trips_paths_and_bytes(tmp_path, name):
    target = tmp_path / name
    with ArchiveWriter(target) as writer:
        writer.add_dir("empty")
        writer.add_file("a/b.txt", b"bytes")
        writer.add_file("c.bin", io.BytesIO(b"stream" * 1000), size=6000)
        assert not target.exists()  # only the .partial exists until commit
    with ArchiveReader(target) as reader:
        files = {m.path: m.open().read() for m in reader.members if not m.is_dir}
        assert "empty" in {m.path for m in reader.members if m.is_dir}
    assert files == {"a/b.txt": b"bytes", "c.bin": b"stream" * 1000}


def test_writer_abort_leaves_nothing(tmp_path):
    target = tmp_path / "out.tgz"
    with pytest.raises(RuntimeError), ArchiveWriter(target) as writer:
        writer.add_file("a.txt", b"a")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_duplicate_paths(tmp_path):
    with pytest.raises(ValueError, match="already written"), ArchiveWriter(tmp_path / "out.zip") as writer:
        writer.add_file("a.txt", b"a")
        writer.add_file("./a.txt", b"b")


def test_duplicate_members_keep_only_the_first(tmp_path):
    path = tmp_path / "dupes.tar"
    with tarfile.open(path, "w") as tf:
        for data in (b"first", b"second"):
            info = tarfile.TarInfo("same.txt")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with ArchiveReader(path) as reader:
        first, second = reader.members
        assert first.error is None and first.open().read() == b"first"
        assert second.error and "duplicate path" in second.error


def test_limits_default_to_the_settings_defaults():
    """A library caller without settings gets the same caps as the CLI and the inbox."""
    assert Limits() == Limits.from_settings(Settings.model_construct())
