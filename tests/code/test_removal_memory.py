"""Peak memory stays flat in archive size: members are streamed, never held all at once."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _peak_rss() -> int:
    """This process's own peak RSS in bytes (VmHWM only grows: after the 2000-image run it is the peak of both runs).

    Not ``ru_maxrss``: Linux carries the forking parent's peak across exec, so a child of a
    2 GiB pytest process would report 2 GiB before doing anything.
    """
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024


def _measure(work: Path) -> None:
    """Child process: clean a 200- and then a 2000-image zip of small JPEGs; print peak RSS after each as JSON."""
    from clearmark.model.inference import DetectionOptions
    from clearmark.removal.inpaint import get_inpainter
    from clearmark.removal.pipeline import remove_watermarks
    from clearmark.settings import Settings
    from tests.support.hostile_archives import encode, watermarked_jpeg, watermarked_rgb, white_mark_detector

    detector, inpainter = white_mark_detector(), get_inpainter("telea", Settings(home=work / "home"))
    options = DetectionOptions(threshold=0.5, dilate_px=2, detect_side=64, batch_size=8)

    def clean(count: int) -> dict[str, int]:
        source = work / f"in-{count}.zip"
        with zipfile.ZipFile(source, "w") as zf:
            for i in range(count):
                # Half carry a mark (cleaned and re-encoded), half are clean (passed through).
                zf.writestr(f"d{i % 7}/{i}.jpg", watermarked_jpeg(seed=i) if i % 2 else encode(watermarked_rgb(64, 64, i)[32:], "PNG"))
        result = remove_watermarks(source, work / f"out-{count}.zip", detector=detector, inpainter=inpainter, options=options, progress=False)
        return {"rows": len(result.report.rows), "peak": _peak_rss()}

    clean(20)  # warm-up: lazy imports and allocator pools are in place before measuring
    print(json.dumps({"small": clean(200), "large": clean(2000)}))


@pytest.mark.slow
def test_peak_rss_is_flat_between_a_200_and_a_2000_image_archive(tmp_path):
    code = f"from tests.code.test_removal_memory import _measure; from pathlib import Path; _measure(Path({str(tmp_path)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    small, large = figures["small"], figures["large"]
    assert (small["rows"], large["rows"]) == (200, 2000)
    print(f"peak RSS: after 200 images {small['peak'] / 2**20:.0f} MiB, after 2000 more {large['peak'] / 2**20:.0f} MiB")
    # Ten times the members may cost only the per-member report rows (well under 1 KiB each).
    assert large["peak"] - small["peak"] < 64 * 2**20, figures
    assert large["peak"] < 2 * 2**30
