"""Sources file validation, extraction of local/synthetic sources, and pair discovery per layout."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from clearmark.data.sources import (
    SourceKind,
    SourcesError,
    SourceSpec,
    SourceUnavailable,
    available_sources,
    discover_pairs,
    extract,
    load_sources,
    pair_id,
    parse_yolo_labels,
    register_source,
)
from clearmark.settings import REPO_ROOT, Settings


def _image(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def _text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def _write_config(tmp_path: Path, body: str) -> Path:
    return _text(tmp_path / "sources.yaml", body)


def _source(layout: str, name: str = "src") -> SourceSpec:
    return SourceSpec(name=name, kind="local", layout=layout, path=Path("/unused"))


# --- the sources file ---------------------------------------------------------------------------


def test_the_repository_sources_file_is_valid() -> None:
    config = load_sources(REPO_ROOT / "config" / "sources.yaml")
    assert list(config.enabled()) == ["synthetic", "synthetic-small"]
    synthetic = config.dataset("synthetic").sources[0]
    assert (synthetic.name, synthetic.kind, synthetic.layout) == ("synthetic-default", "synthetic", "synthetic")
    assert synthetic.synthetic.count == 600 and synthetic.synthetic.size == 256
    kinds = {source.kind for dataset in config.datasets.values() for source in dataset.sources}
    layouts = {source.layout for dataset in config.datasets.values() for source in dataset.sources}
    assert kinds == {"kaggle", "local", "synthetic", "feedback"} and layouts == {"pairs", "clwd", "synthetic", "boxes"}
    local = config.dataset("local-pairs").sources[0]
    assert local.path == (REPO_ROOT / "data" / "local-pairs").resolve() and local.mask_threshold == 24
    feedback = config.dataset("feedback").sources[0]
    assert (feedback.kind, feedback.layout, feedback.path) == ("feedback", "boxes", (REPO_ROOT / "data" / "feedback-labels").resolve())


def test_a_feedback_source_is_boxes_and_takes_only_known_flags() -> None:
    with pytest.raises(ValidationError, match="layout 'boxes'"):
        SourceSpec(name="flags", kind="feedback", layout="pairs")
    with pytest.raises(ValidationError, match="watermark_left"):
        SourceSpec(name="flags", kind="feedback", layout="boxes", options={"flags": ["blurry"]})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("datasets:\n  a:\n    sources:\n      - {name: k, kind: kaggle, layout: pairs}\n", "datasets.a.sources.0: Value error, kind 'kaggle' needs 'handle"),
        ("datasets:\n  a:\n    sources:\n      - {name: l, kind: local, layout: pairs}\n", "kind 'local' needs 'path"),
        ("datasets:\n  a:\n    sources:\n      - {name: s, kind: synthetic, layout: synthetic, options: {count: 0}}\n", "greater than or equal to 1"),
        ("datasets:\n  a:\n    sources:\n      - {name: s, kind: synthetic, layout: synthetic, options: {colour: red}}\n", "colour"),
        ("datasets:\n  a:\n    sources:\n      - {name: s, kind: ftp, layout: pairs}\n", "datasets.a.sources.0.kind"),
        ("datasets:\n  a:\n    sources:\n      - {name: S P, kind: local, layout: pairs, path: x}\n", "datasets.a.sources.0.name"),
        ("datasets:\n  a:\n    sources: []\n", "datasets.a.sources"),
        ("datasets:\n  a:\n    sources: [{name: x, kind: local, layout: pairs, path: p}]\n  b:\n    sources: [{name: x, kind: local, layout: boxes, path: q}]\n", "used by datasets 'a' and 'b'"),
        ("datasets:\n  Bad Name:\n    sources: [{name: x, kind: local, layout: pairs, path: p}]\n", "dataset name 'Bad Name'"),
        ("datasets:\n  a:\n    enabled: yes\n    sources: [{name: x, kind: local, layout: pairs, path: p}]\n    colour: red\n", "datasets.a.colour"),
        ("datasets: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_sources_files_name_the_file_and_the_field(tmp_path: Path, body: str, expected: str) -> None:
    path = _write_config(tmp_path, body)
    with pytest.raises(SourcesError) as caught:
        load_sources(path)
    assert str(path) in str(caught.value) and expected in str(caught.value)


def test_an_unknown_kind_lists_the_registered_ones(tmp_path: Path) -> None:
    path = _write_config(tmp_path, "datasets:\n  a:\n    sources:\n      - {name: s, kind: ftp, layout: pairs}\n")
    with pytest.raises(SourcesError, match="unknown source kind 'ftp'; choose one of feedback, kaggle, local, synthetic"):
        load_sources(path)


def test_a_registered_kind_is_read_from_the_sources_file_and_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clearmark.data import sources

    monkeypatch.setattr(sources, "_SOURCE_KINDS", dict(sources._SOURCE_KINDS))  # leave the real registry as it was

    @register_source("bucket-copy")
    class BucketCopy(SourceKind):
        location = "path"

        def fetch(self, source: SourceSpec, settings: Settings) -> Path:
            return Path(str(source.path)) / "copied"

    assert "bucket-copy" in available_sources()
    path = _write_config(tmp_path, "datasets:\n  a:\n    sources:\n      - {name: b, kind: bucket-copy, layout: pairs, path: there, options: {mask_threshold: 9}}\n")
    (source,) = load_sources(path).dataset("a").sources
    assert extract(source, Settings(home=tmp_path)) == tmp_path / "there" / "copied"
    assert source.mask_threshold == 9
    with pytest.raises(ValueError, match="already registered"):
        register_source("local")(BucketCopy)
    with pytest.raises(SourcesError, match="'handle' is only for kind 'kaggle'"):
        load_sources(_write_config(tmp_path, "datasets:\n  a:\n    sources:\n      - {name: b, kind: bucket-copy, layout: pairs, path: p, handle: o/d}\n"))


def test_missing_sources_file_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(SourcesError, match="CLEARMARK_SOURCES_FILE"):
        load_sources(tmp_path / "nope.yaml")


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(SourcesError, match="known: .*synthetic"):
        load_sources(REPO_ROOT / "config" / "sources.yaml").dataset("imagenet")


# --- extraction ---------------------------------------------------------------------------------


def test_local_source_is_its_folder_and_a_missing_one_is_explained(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    path = _write_config(tmp_path, "datasets:\n  a:\n    sources:\n      - {name: here, kind: local, layout: pairs, path: photos}\n      - {name: gone, kind: local, layout: pairs, path: missing}\n")
    config = load_sources(path)
    here, gone = config.dataset("a").sources
    settings = Settings(home=tmp_path / "home", sources_file=path)
    assert extract(here, settings) == tmp_path / "photos"
    with pytest.raises(SourceUnavailable) as caught:
        extract(gone, settings)
    assert str(tmp_path / "missing") in str(caught.value) and str(path) in str(caught.value)


def test_synthetic_source_is_generated_once_into_the_cache(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    source = SourceSpec(name="syn", kind="synthetic", layout="synthetic", options={"count": 4, "seed": 5, "size": 64})
    folder = extract(source, settings)
    assert folder == settings.cache_dir / "synthetic" / "5-4-64"
    assert sorted(p.name for p in (folder / "masks").iterdir()) == [f"synth_{i:05d}.png" for i in range(4)]
    stamp = (folder / "clean" / "synth_00000.png").stat().st_mtime_ns
    assert extract(source, settings) == folder
    assert (folder / "clean" / "synth_00000.png").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert [p.name for p in folder.parent.iterdir()] == ["5-4-64"]  # no temporary folder left behind
    discovery = discover_pairs(source, folder)
    assert [pair.id for pair in discovery.pairs] == [f"syn/synth_{i:05d}" for i in range(4)] and not discovery.rejects
    assert all(pair.clean and pair.mask and pair.boxes is None for pair in discovery.pairs)


def test_a_synthetic_source_passes_styles_jpeg_quality_and_the_users_photos_through(tmp_path: Path) -> None:
    """"Synthetic marks on my photos": the photo styles on a folder of the user's clean photos, matte included."""
    from clearmark.data.photos import folder_photos
    from clearmark.data.synth import generate_synthetic

    photos = tmp_path / "my-photos"
    photos.mkdir()
    for index in range(2):
        Image.fromarray(np.random.default_rng(index).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(photos / f"p{index}.jpg")
    sources_file = tmp_path / "sources.yaml"
    sources_file.write_text(
        "datasets:\n  mine:\n    sources:\n      - {name: mine, kind: synthetic, layout: synthetic,\n"
        "         options: {count: 3, seed: 2, size: 64, styles: photo-train, jpeg_quality: [80, 90], photo_folder: my-photos}}\n"
    )
    source = load_sources(sources_file).dataset("mine").sources[0]
    assert source.synthetic.photo_folder == photos  # relative to the sources file
    settings = Settings(home=tmp_path / "home")
    folder = extract(source, settings)
    expected = generate_synthetic(tmp_path / "direct", 3, 2, size=64, styles="photo-train", jpeg_quality=(80, 90), photo_folder=photos, progress=False)
    assert {item.photo for item in expected.items} <= {path.name for path in folder_photos(photos)}
    for part in ("watermarked", "alpha", "colour"):
        assert (folder / part / "synth_00000.png").read_bytes() == (tmp_path / "direct" / part / "synth_00000.png").read_bytes()
    assert all(pair.alpha and pair.colour for pair in discover_pairs(source, folder).pairs)
    embedded = SourceSpec(name="e", kind="synthetic", layout="synthetic", options={"count": 3, "seed": 2, "size": 64})
    assert extract(embedded, settings) != folder  # another style is another cached set

    (photos / "p0.jpg").unlink()
    (photos / "p1.jpg").unlink()
    with pytest.raises(SourceUnavailable, match=r"holds no image.*add clean photos.*photo_folder"):
        extract(source, settings)


# --- discovery ----------------------------------------------------------------------------------


def _by_id(discovery) -> dict:  # noqa: ANN001 - Discovery
    return {pair.id: pair for pair in discovery.pairs}


def _reasons(discovery) -> dict[str, str]:  # noqa: ANN001 - Discovery
    return {reject.path: reject.reason for reject in discovery.rejects}


def test_pairs_layout_with_folders_variants_and_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "download" / "wrapped"  # archives often wrap everything in one folder
    _image(root / "clean" / "cat.jpg")
    _image(root / "watermarked" / "cat_v1.jpg")
    _image(root / "watermarked" / "cat_v2.png")
    _image(root / "clean" / "dog.png")
    _image(root / "watermarked" / "dog.png")
    _image(root / "clean" / "lonely.png")
    _image(root / "watermarked" / "stray.png")
    _text(root / "watermarked" / "notes.txt", "hello")
    _text(root / "watermarked" / ".DS_Store", "junk")
    _text(root / "README.md", "outside the layout folders: not part of the data")
    discovery = discover_pairs(_source("pairs"), tmp_path / "download")
    pairs = _by_id(discovery)
    assert sorted(pairs) == ["src/wrapped/cat_v1", "src/wrapped/cat_v2", "src/wrapped/dog"]
    assert pairs["src/wrapped/cat_v2"].clean == root / "clean" / "cat.jpg"
    assert pairs["src/wrapped/dog"].watermarked == root / "watermarked" / "dog.png" and pairs["src/wrapped/dog"].mask is None
    assert _reasons(discovery) == {
        "wrapped/clean/lonely.png": "unpaired",
        "wrapped/watermarked/stray.png": "unpaired",
        "wrapped/watermarked/notes.txt": "not_image",
    }
    assert all(reject.source == "src" and reject.detail for reject in discovery.rejects)


def test_pairs_layout_flat_files(tmp_path: Path) -> None:
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "a_clean.jpg")
    _image(tmp_path / "sub" / "b_v3.png")
    _image(tmp_path / "sub" / "b_CLEAN.png")
    _image(tmp_path / "orphan.jpg")
    _image(tmp_path / "c_clean.png")
    discovery = discover_pairs(_source("pairs"), tmp_path)
    pairs = _by_id(discovery)
    assert sorted(pairs) == ["src/a", "src/sub/b_v3"]
    assert pairs["src/sub/b_v3"].clean == tmp_path / "sub" / "b_CLEAN.png"
    assert _reasons(discovery) == {"orphan.jpg": "unpaired", "c_clean.png": "unpaired"}


def test_clwd_layout_with_splits_and_an_optional_mask(tmp_path: Path) -> None:
    for split in ("train", "test"):
        _image(tmp_path / "CLWD" / split / "Watermarked_image" / "1.jpg")
        _image(tmp_path / "CLWD" / split / "Watermark_free_image" / "1.jpg")
    _image(tmp_path / "CLWD" / "train" / "Mask" / "1.png")
    _image(tmp_path / "CLWD" / "train" / "Alpha" / "1.png")  # not used by clearmark
    _image(tmp_path / "CLWD" / "test" / "Watermarked_image" / "2.jpg")
    discovery = discover_pairs(_source("clwd", "clwd"), tmp_path)
    pairs = _by_id(discovery)
    assert sorted(pairs) == ["clwd/CLWD/test/1", "clwd/CLWD/train/1"]
    assert pairs["clwd/CLWD/train/1"].mask == tmp_path / "CLWD" / "train" / "Mask" / "1.png"
    assert pairs["clwd/CLWD/test/1"].mask is None  # computed later from the difference
    assert _reasons(discovery) == {"CLWD/test/Watermarked_image/2.jpg": "unpaired"}


def test_synthetic_layout_needs_all_three_files(tmp_path: Path) -> None:
    for part in ("clean", "watermarked", "masks"):
        _image(tmp_path / part / "x.png")
    _image(tmp_path / "watermarked" / "y.png")
    _image(tmp_path / "clean" / "y.png")
    discovery = discover_pairs(_source("synthetic"), tmp_path)
    assert [pair.id for pair in discovery.pairs] == ["src/x"]
    assert _reasons(discovery) == {"watermarked/y.png": "unpaired", "clean/y.png": "unpaired"}


def test_boxes_layout_reads_yolo_labels(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "train" / "a.jpg")
    _text(tmp_path / "labels" / "train" / "a.txt", "0 0.5 0.5 0.2 0.1\n\n1 0.1 0.2 0.05 0.05\n")
    _image(tmp_path / "images" / "train" / "empty.jpg")
    _text(tmp_path / "labels" / "train" / "empty.txt", "")
    _image(tmp_path / "images" / "train" / "nolabel.jpg")
    _image(tmp_path / "images" / "val" / "bad.jpg")
    _text(tmp_path / "labels" / "val" / "bad.txt", "0 0.5 0.5 1.7 0.1\n")
    _text(tmp_path / "labels" / "val" / "ghost.txt", "0 0.5 0.5 0.1 0.1\n")
    _text(tmp_path / "data.yaml", "names: [watermark]\n")
    discovery = discover_pairs(_source("boxes"), tmp_path)
    pairs = _by_id(discovery)
    assert sorted(pairs) == ["src/train/a", "src/train/empty"]
    assert pairs["src/train/a"].boxes == [(0, 0.5, 0.5, 0.2, 0.1), (1, 0.1, 0.2, 0.05, 0.05)]
    assert pairs["src/train/empty"].boxes == [] and pairs["src/train/a"].clean is None
    assert _reasons(discovery) == {
        "images/train/nolabel.jpg": "missing_labels",
        "labels/val/bad.txt": "bad_labels",
        "labels/val/ghost.txt": "unpaired",
    }


def test_same_name_with_two_extensions_is_a_duplicate(tmp_path: Path) -> None:
    _image(tmp_path / "clean" / "p.png")
    _image(tmp_path / "watermarked" / "p.jpg")
    _image(tmp_path / "watermarked" / "p.png")
    discovery = discover_pairs(_source("pairs"), tmp_path)
    assert [pair.id for pair in discovery.pairs] == ["src/p"]
    assert [reject.reason for reject in discovery.rejects] == ["duplicate_id"]


def test_a_layout_that_matches_nothing_is_a_configuration_error(tmp_path: Path) -> None:
    _image(tmp_path / "photos" / "a.jpg")
    with pytest.raises(SourcesError, match="Watermarked_image/ \\+ watermark_free_image/|watermarked_image/ \\+ watermark_free_image/"):
        discover_pairs(_source("clwd"), tmp_path)


def test_pair_ids_are_safe_object_keys() -> None:
    assert pair_id("src", PurePosixPath("My Photos/été 2024/..hidden img")) == "src/My_Photos/_t_2024/hidden_img"
    assert pair_id("src", PurePosixPath("../x")) == "src/_/x"


def test_yolo_label_parsing_reports_the_line() -> None:
    assert parse_yolo_labels(["0 0.1 0.2 0.3 0.4"]) == [(0, 0.1, 0.2, 0.3, 0.4)]
    with pytest.raises(ValueError, match="line 2"):
        parse_yolo_labels(["0 0.1 0.2 0.3 0.4", "watermark 0.1 0.2 0.3 0.4"])
